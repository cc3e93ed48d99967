"""URLs for the request-integration tests."""

from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("tokens/", views.token_count),
    path("streaming/", views.streaming),
    path("async-function/", views.async_function),
    path("async-class/", views.async_class),
    path("too-slow/", views.too_slow),
    path("failing/", views.failing),
    path("post-only/", views.post_only),
    path("members-only/", views.members_only),
    path("cached/", views.cached),
    path("plain-async/", views.plain_async),
    path("plain-async-class/", views.PlainAsyncClassView.as_view()),
    path("create-then-fail/", views.create_then_fail),
    path("plain-async-failing/", views.plain_async_failing),
    path("async-streaming/", views.async_streaming),
]
