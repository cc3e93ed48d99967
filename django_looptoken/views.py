"""The staff-only status page: every live process of this project, refreshed live."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny

from django_looptoken._sparkline import HEIGHT, WIDTH, sparklines
from django_looptoken._status import would_start
from django_looptoken._status_report import TASKS_REQUEST, StatusReport, duration
from django_looptoken.conf import looptoken_settings

REFRESH_SECONDS = 5

View = Callable[..., HttpResponse]

NOT_STAFF = "The loop status page is for staff users only."
HOW_TO_LOG_IN = (
    "Log in as a staff user on this site's login page, then open this page again "
    "(set LOGIN_URL, or route django.contrib.admin, to be sent to a login page from here)."
)


def wants_json(request: HttpRequest) -> bool:
    """Whether the request asks for the JSON report (``?format=json``)."""
    return request.GET.get("format") == "json"


def login_url() -> str | None:
    """Where an anonymous user logs in: ``LOGIN_URL`` if the project set it, else
    the admin's login when the admin is installed and routed, else None."""
    if settings.is_overridden("LOGIN_URL"):  # type: ignore[misc]
        return str(settings.LOGIN_URL)
    if apps.is_installed("django.contrib.admin"):
        try:
            return reverse("admin:login")
        except NoReverseMatch:
            pass
    return None


FORBIDDEN_PAGE = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>403 Forbidden · Loop status</title></head>\n"
    '<body><h1>403 Forbidden</h1>\n<p id="reason">{}</p></body></html>\n'
)


def forbidden(request: HttpRequest, message: str) -> HttpResponse:
    """403 with ``message``: JSON for ``?format=json``, else a one-sentence page.

    Built without the template engine, so a refusal works in any project.
    """
    if wants_json(request):
        return JsonResponse({"error": message}, status=403)
    return HttpResponseForbidden(format_html(FORBIDDEN_PAGE, message))


def staff_only(view: View) -> View:
    """Active staff see the page. Anonymous users are sent to a login page that
    exists (see ``login_url()``), or get 403 saying how to log in; JSON
    requests get a JSON 403 instead of a redirect. Logged-in users who are
    not active staff get 403."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is None:
            raise ImproperlyConfigured(
                "The looptoken status page needs django.contrib.auth and "
                "AuthenticationMiddleware: it is for staff users only."
            )
        if not user.is_authenticated:
            url = None if wants_json(request) else login_url()
            if url is None:
                return forbidden(request, f"{NOT_STAFF} {HOW_TO_LOG_IN}")
            return redirect_to_login(request.get_full_path(), url)
        if not (user.is_active and user.is_staff):
            return forbidden(request, f"{NOT_STAFF} You are logged in as {user.get_username()}.")
        return view(request, *args, **kwargs)

    return wrapper


@xframe_options_deny
@never_cache
@staff_only
def status_page(request: HttpRequest) -> HttpResponse:
    """The status table (``?format=json`` for JSON) of this project's processes.

    Every answer, a refusal or a redirect too, says ``X-Frame-Options: DENY``
    and ``Cache-Control: no-store`` itself, whatever the project's middleware.
    """
    report = StatusReport.gather()
    if wants_json(request):
        return JsonResponse(report.as_json())
    context = {
        "columns": report.columns(),
        "rows": report.rows(),
        "project": report.project,
        "listing": report.listing,
        "refresh": REFRESH_SECONDS,
        "would_start": would_start() if report.empty else None,
        "charts": [
            (status.get("pid"), sparklines(status.get("history") or []))
            for status in report.processes
        ],
        "chart_size": (WIDTH, HEIGHT),
    }
    return render(request, "django_looptoken/status.html", context)


@xframe_options_deny
@never_cache
@staff_only
def tasks_page(request: HttpRequest, pid: int) -> HttpResponse:
    """The pending tasks of one process of this project, oldest first, with
    what each waits on (``?format=json`` for JSON). Read-only: cancelling a
    task is for ``manage.py loopstatus --cancel``."""
    report = StatusReport.gather(only_pid=pid, request=TASKS_REQUEST)
    if wants_json(request):
        status = 200 if report.processes else 404
        return JsonResponse(report.as_json(), status=status)
    answer = report.processes[0] if report.processes else None
    context = {
        "pid": pid,
        "answer": answer,
        "tasks": [
            {**task, "age": duration(task.get("age_s"))}
            for task in (answer.get("tasks") or [] if answer else [])
        ],
        "silent": report.listing.silent,
        "project": report.project,
        "listing": report.listing,
        "refresh": REFRESH_SECONDS,
    }
    return render(request, "django_looptoken/tasks.html", context, status=200 if answer else 404)


METRICS_NEED_CREDENTIALS = (
    "The loop metrics need credentials: send LOOPTOKEN['METRICS_TOKEN'] as a bearer "
    "token (Prometheus: authorization: {credentials: ...}), or log in as staff."
)


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None if the request may read the metrics: it carries the configured
    bearer token, or comes from active staff. Else 401 without credentials,
    403 with wrong ones; never the data."""
    token = looptoken_settings.METRICS_TOKEN
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if token is not None and scheme.lower() == "bearer":
        if hmac.compare_digest(sent.strip().encode(), token.encode()):
            return None
        return HttpResponseForbidden("Wrong bearer token for the loop metrics.\n")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if user.is_active and user.is_staff:
            return None
        return HttpResponseForbidden(f"{METRICS_NEED_CREDENTIALS}\n")
    refusal = HttpResponse(f"{METRICS_NEED_CREDENTIALS}\n", status=401, content_type="text/plain")
    refusal["WWW-Authenticate"] = 'Bearer realm="looptoken metrics"'
    return refusal


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of every local process of this project (any worker
    that answers the scrape reports them all), for the bearer token in
    ``LOOPTOKEN["METRICS_TOKEN"]`` or for staff."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    try:
        from django_looptoken import _metrics
    except ImportError:
        return HttpResponse(
            "The loop metrics need prometheus_client: pip install 'django-looptoken[metrics]'.\n",
            status=501,
            content_type="text/plain",
        )
    body, content_type = _metrics.exposition(StatusReport.gather())
    return HttpResponse(body, content_type=content_type)
