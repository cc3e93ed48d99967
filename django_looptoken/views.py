"""The staff-only status page: every live process of this project, refreshed live."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from django_looptoken._status import (
    COLUMNS,
    listing_report,
    project,
    silent_row,
    table_row,
    would_start,
)
from django_looptoken._status_socket import collect, status_dir
from django_looptoken.conf import looptoken_settings

REFRESH_SECONDS = 5

View = Callable[..., HttpResponse]


def staff_only(view: View) -> View:
    """Anonymous users get the login redirect; logged-in users who are not
    active staff get 403 (Django's ``staff_member_required`` would send them
    to the admin login instead)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is None:
            raise ImproperlyConfigured(
                "The looptoken status page needs django.contrib.auth and "
                "AuthenticationMiddleware: it is for staff users only."
            )
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (user.is_active and user.is_staff):
            raise PermissionDenied("The loop status page is for staff users only.")
        return view(request, *args, **kwargs)

    return wrapper


@staff_only
def status_page(request: HttpRequest) -> HttpResponse:
    """The status table (``?format=json`` for JSON) of this project's processes."""
    listing = collect(status_dir(looptoken_settings.STATUS_DIR))
    this_project = project()
    processes = [p for p in listing.processes if p.get("project") == this_project]
    if request.GET.get("format") == "json":
        return JsonResponse(
            {**listing_report(listing, processes, this_project), "error": listing.error}
        )
    rows = [table_row(p)[:-1] for p in processes]
    rows += [silent_row(pid, why)[:-1] for pid, why in listing.silent]
    context = {
        "columns": COLUMNS[:-1],
        "rows": rows,
        "project": this_project,
        "listing": listing,
        "refresh": REFRESH_SECONDS,
        "would_start": None if rows else would_start(),
    }
    return render(request, "django_looptoken/status.html", context)
