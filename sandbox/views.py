"""HTTP face of the offline model, so the CLI can reach it at `<site>/offline` (demo, no API key)."""

from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from sandbox.offline import respond


@csrf_exempt  # called by the CLI with an API key header, never by a browser session
@require_POST
async def offline_messages(request: HttpRequest, path: str) -> HttpResponseBase:
    result = await respond(path, request.body, dict(request.headers))
    response = StreamingHttpResponse(result.body, status=result.status, content_type=result.content_type)
    # Each SSE event must reach the CLI as it is produced, not when a proxy's buffer fills.
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@csrf_exempt  # the CSRF middleware checks the resolved view, so the route's entry point needs it too
async def offline_v1(request: HttpRequest, rest: str) -> HttpResponseBase:
    return await offline_messages(request, "/v1/" + rest)
