# Django 4.2: an SQLite backend whose transactions begin IMMEDIATE.
# Copy this folder into your project as a package (for example sqlite_immediate/
# next to manage.py) and point DATABASES["default"]["ENGINE"] at it; see
# settings.py beside this folder. The code is in base.py.
