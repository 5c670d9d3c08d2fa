"""What `OPTIONS` answers on every API route."""

from typing import TYPE_CHECKING, Any

from rest_framework.metadata import BaseMetadata
from rest_framework.request import Request

if TYPE_CHECKING:  # rest_framework.views imports this module while it is being imported
    from rest_framework.views import APIView


class ApiMetadata(BaseMetadata):
    """The resource's name and description, with its methods in the `Allow` header; the OpenAPI schema
    describes the bodies. DRF's default also describes a form from the view's one serializer, which a
    view with a serializer per action, or with no queryset, does not have: `OPTIONS` answered 500."""

    def determine_metadata(self, request: Request, view: "APIView") -> dict[str, Any]:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.get_parsers()],
            "schema": "/api/schema/",
        }
