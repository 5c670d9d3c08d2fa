"""What goes wrong with an OpenAPI document or a call of one of its tools."""


class OpenApiProblem(ValueError):
    """What to fix: in the document when it is loaded, in the arguments when a tool is called."""


class OperationSkipped(Exception):
    """Why one operation cannot be a tool; the rest of the document still can."""
