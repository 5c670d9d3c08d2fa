"""What the operator admins of every app share: no models, no registrations, only admin behaviour."""

from typing import Any

from django.http import HttpRequest
from django.utils.html import format_html


class ReadOnlyAdminMixin:
    """Rows only the platform writes (runs, events, usage, budget counters, file, skill and price history).

    Operators look at them but never add, change or delete one: each was written once by the code path
    that owns it (the gateway's meter, the event log, an upload), and other rows and bills were made from
    it. Deleting the owner (a tenant, a conversation) is the deliberate way to remove them. Put it before
    `admin.ModelAdmin` or an inline class, so these answers win.
    """

    # `obj` is optional for every permission: inlines pass it to `has_add_permission`, model admins do not.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def make_current_button(url: str) -> str:
    """A version inline's "Make current": a button of the change form posting elsewhere, since a form cannot
    nest in another, and the change form already carries the CSRF token the make-current view checks."""
    return format_html(
        '<button type="submit" class="button" formaction="{}" formmethod="post" formnovalidate>Make current</button>',
        url,
    )
