"""A PEP 517 build backend for locklab-django, standard library only.

It builds a pure-Python wheel of src/locklab_django (build_wheel), an sdist of
the source tree (build_sdist), and an editable install that points at src/
(build_editable, PEP 660). See ../pyproject.toml for why it exists.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

NAME = "locklab_django"
DIST = "locklab-django"
SUMMARY = "Records every SQLite 'database is locked' in a Django app, in locklab's trace format"
REQUIRES_PYTHON = ">=3.8"
LICENSE = "MIT OR Apache-2.0"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src", NAME)


def version():
    with open(os.path.join(SRC, "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def metadata():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    return (
        "Metadata-Version: 2.1\n"
        "Name: %s\nVersion: %s\nSummary: %s\nLicense: %s\nRequires-Python: %s\n"
        "Description-Content-Type: text/markdown\n\n%s"
        % (DIST, version(), SUMMARY, LICENSE, REQUIRES_PYTHON, readme)
    )


def dist_info():
    return "%s-%s.dist-info" % (NAME, version())


def wheel_name():
    return "%s-%s-py3-none-any.whl" % (NAME, version())


class Wheel:
    """A wheel: files plus a RECORD of their hashes."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self.record = []

    def add(self, arcname, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))
        self.zip.writestr(zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0)), data)

    def close(self):
        info = dist_info()
        self.add(info + "/METADATA", metadata())
        self.add(info + "/WHEEL", "Wheel-Version: 1.0\nGenerator: locklab_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        self.add(info + "/top_level.txt", NAME + "\n")
        self.record.append(info + "/RECORD,,")
        self.zip.writestr(info + "/RECORD", "\n".join(self.record) + "\n")
        self.zip.close()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel = Wheel(os.path.join(wheel_directory, wheel_name()))
    for dirpath, dirnames, filenames in os.walk(SRC):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    wheel.add(os.path.relpath(path, os.path.dirname(SRC)).replace(os.sep, "/"), f.read())
    wheel.close()
    return wheel_name()


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    wheel = Wheel(os.path.join(wheel_directory, wheel_name()))
    wheel.add("__editable__.%s.pth" % NAME, os.path.dirname(SRC) + "\n")
    wheel.close()
    return wheel_name()


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, version())
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "build", "dist") and not d.endswith(".egg-info"))
            for fname in sorted(filenames):
                path = os.path.join(dirpath, fname)
                tar.add(path, arcname=os.path.join(base, os.path.relpath(path, ROOT)), recursive=False)
        data = metadata().encode("utf-8")
        info = tarfile.TarInfo(base + "/PKG-INFO")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return name
