"""The chat page for end users: opened by a chat link, served with a strict Content-Security-Policy."""

from django.conf import settings
from django.contrib.auth.decorators import user_passes_test
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from chat.auth import session_grant, start_session
from chat.links import ChatGrant, read_link_token
from conversations.models import Conversation
from tenants.models import Tenant

# Nothing inline, nothing from elsewhere: what an agent writes can never run as script here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def _with_policy(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "no-referrer"
    return response


def refused(request: HttpRequest, message: str, status: int = 403) -> HttpResponse:
    return _with_policy(render(request, "chat/refused.html", {"message": message}, status=status))


@require_GET
def open_link(request: HttpRequest, token: str) -> HttpResponse:
    """Trade a chat link for a session of its end user, then show the page (the link leaves the address bar)."""
    grant = read_link_token(token)
    if grant is None:
        return refused(request, "This chat link has expired or is not valid. Ask for a new one.")
    if not Tenant.objects.active().filter(pk=grant.tenant_id).exists():
        return refused(request, "This chat is not available.")
    if (
        grant.conversation_id
        and not Conversation.objects.filter(
            pk=grant.conversation_id, tenant_id=grant.tenant_id, user_id=grant.user_id
        ).exists()
    ):
        return refused(request, "This conversation is not available.", status=404)
    start_session(request, grant)
    return HttpResponseRedirect("/chat/")


@require_GET
@user_passes_test(lambda user: user.is_active and user.is_staff, login_url="/admin/login/")
def staff_chat(request: HttpRequest, tenant: str) -> HttpResponse:
    """Staff open any tenant's chat, as an end user of their own (`staff:<username>`)."""
    if not Tenant.objects.filter(pk=tenant).exists():
        return refused(request, "No such tenant.", status=404)
    start_session(request, ChatGrant(tenant, f"staff:{request.user.get_username()}"))
    return HttpResponseRedirect("/chat/")


@require_GET
@ensure_csrf_cookie  # the page's API calls send it back (X-CSRFToken), as any cookie session must
def page(request: HttpRequest) -> HttpResponse:
    grant = session_grant(request)
    if grant is None:
        return refused(request, "Open the chat with the link you were given.", status=401)
    tenant = Tenant.objects.select_related("default_model").filter(pk=grant.tenant_id).first()
    if tenant is None:
        return refused(request, "This chat is not available.", status=404)
    context = {
        "tenant": tenant,
        "user_id": grant.user_id,
        "only_conversation": grant.conversation_id or "",
        # Labelled from the start; each run.started says again which sandbox that run had.
        "unsandboxed": settings.SANDBOX_RUNNER == "unsandboxed",
    }
    return _with_policy(render(request, "chat/page.html", context))
