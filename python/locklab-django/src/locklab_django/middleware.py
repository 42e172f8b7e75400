"""Names the operation after the view that runs, so that each lock error in a
request is recorded under its view (`op`): the URL pattern's name when it has
one (namespaced as Django prints it), the view function's dotted name if not.

Add "locklab_django.middleware.LockTraceMiddleware" to MIDDLEWARE, first or
early. Without it, errors in requests are recorded under the process's name.
"""

from .recorder import current_op


def view_name(request, view_func):
    match = getattr(request, "resolver_match", None)
    if match is not None and match.url_name:
        return match.view_name
    func = getattr(view_func, "view_class", view_func)
    return "%s.%s" % (getattr(func, "__module__", "?"), getattr(func, "__qualname__", repr(func)))


class LockTraceMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = current_op.set(None)
        try:
            return self.get_response(request)
        finally:
            current_op.reset(token)

    def process_view(self, request, view_func, view_args, view_kwargs):
        current_op.set(view_name(request, view_func))
        return None
