"""An OpenAPI 3 document becomes tools, and a tool call becomes an HTTP request that stays under the base URL."""

import json

import pytest

from mcp_servers.openapi import (
    MAX_BYTES,
    MAX_DESCRIPTION,
    MAX_OPERATIONS,
    OpenApiProblem,
    Operation,
    Parameter,
    build_request,
    load_document,
    operations,
    skipped_operations,
)

PETSTORE = """
openapi: 3.0.3
info: {title: Petstore, version: "1.0"}
paths:
  /pets:
    get:
      operationId: listPets
      summary: List pets
      parameters:
        - {name: limit, in: query, schema: {type: integer}}
        - {name: tags, in: query, schema: {type: array, items: {type: string}}}
        - {name: "filter[status]", in: query, schema: {type: string}}
        - {name: X-Request-Id, in: header, schema: {type: string}}
        - {name: Authorization, in: header, schema: {type: string}}
        - {name: session, in: cookie, schema: {type: string}}
    post:
      operationId: "pets.create (v2)"
      summary: Create a pet
      parameters:
        - {name: name, in: query, description: Check the name only, schema: {type: string}}
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewPet"}
  /pets/{petId}:
    parameters:
      - $ref: "#/components/parameters/PetId"
    get:
      summary: Info for a pet
      description: Returns one pet.
      parameters:
        - {name: petId, in: path, required: true, description: A name or an id, schema: {type: string}}
    delete: {}
    put:
      operationId: updatePet
      requestBody: {$ref: "#/components/requestBodies/PetBody"}
  /pets/{petId}/photos:
    get:
      operationId: pets/photos
    put:
      operationId: pets photos
      requestBody:
        content:
          application/merge-patch+json:
            schema: {type: array, items: {type: string}}
  /trees:
    post:
      operationId: plantTree
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Node"}
  /upload:
    post:
      operationId: uploadPhoto
      requestBody:
        content:
          multipart/form-data:
            schema: {type: object, properties: {file: {type: string, format: binary}}}
components:
  parameters:
    PetId: {name: petId, in: path, required: true, description: The pet's id, schema: {type: integer}}
  requestBodies:
    PetBody:
      content:
        application/json:
          schema: {$ref: "#/components/schemas/NewPet"}
  schemas:
    NewPet:
      type: object
      required: [name]
      properties:
        id: {type: integer, readOnly: true}
        name: {type: string}
        tag: {type: string}
    Node:
      type: object
      properties:
        value: {type: string}
        children: {type: array, items: {$ref: "#/components/schemas/Node"}}
"""

NEW_PET = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "tag": {"type": "string"}},
}
BASE_URL = "https://api.example.com/v1"


@pytest.fixture(scope="module")
def tools() -> dict[str, Operation]:
    return {operation.name: operation for operation in operations(load_document(PETSTORE))}


def minimal(paths: dict, **extra: object) -> dict:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


def test_each_path_and_method_is_a_tool_named_for_its_operation_id_or_its_method_and_path(
    tools: dict[str, Operation],
) -> None:
    assert list(tools) == [
        "listPets",
        "pets_create_v2",
        "get_pets_petId",
        "updatePet",
        "delete_pets_petId",
        "pets_photos",
        "pets_photos_2",
        "plantTree",
    ]


def test_a_description_is_the_summary_and_description_or_the_method_and_path(tools: dict[str, Operation]) -> None:
    assert tools["listPets"].description == "List pets"
    assert tools["get_pets_petId"].description == "Info for a pet\n\nReturns one pet."
    assert tools["delete_pets_petId"].description == "DELETE /pets/{petId}"


def test_a_long_description_is_truncated() -> None:
    document = minimal({"/x": {"get": {"description": "x" * 5000}}})

    [operation] = operations(document)

    assert len(operation.description) == MAX_DESCRIPTION
    assert operation.description.endswith("…")


def test_query_and_header_parameters_are_optional_arguments_and_cookies_are_left_out(
    tools: dict[str, Operation],
) -> None:
    schema = tools["listPets"].input_schema

    assert schema["properties"] == {
        "limit": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "filter_status": {"type": "string", "description": "Query parameter `filter[status]`."},
        "X-Request-Id": {"type": "string"},
        "Authorization": {"type": "string"},
    }
    assert schema["required"] == []
    assert schema["additionalProperties"] is False
    assert tools["listPets"].parameters == [
        Parameter("limit", "query", "limit"),
        Parameter("tags", "query", "tags"),
        Parameter("filter[status]", "query", "filter_status"),
        Parameter("X-Request-Id", "header", "X-Request-Id"),
        Parameter("Authorization", "header", "Authorization"),
    ]


def test_path_level_parameters_apply_to_every_operation_and_an_operation_can_override_them(
    tools: dict[str, Operation],
) -> None:
    delete_schema = tools["delete_pets_petId"].input_schema
    get_schema = tools["get_pets_petId"].input_schema

    assert delete_schema["properties"] == {"petId": {"type": "integer", "description": "The pet's id"}}
    assert delete_schema["required"] == ["petId"]
    assert get_schema["properties"] == {"petId": {"type": "string", "description": "A name or an id"}}
    assert get_schema["required"] == ["petId"]


def test_an_object_body_is_merged_into_the_arguments_without_its_read_only_properties(
    tools: dict[str, Operation],
) -> None:
    update = tools["updatePet"]

    assert update.input_schema["properties"] == {
        "petId": {"type": "integer", "description": "The pet's id"},
        "name": {"type": "string"},
        "tag": {"type": "string"},
    }
    assert update.input_schema["required"] == ["petId"]  # the body itself is optional
    assert update.body == "json"
    assert update.body_properties == ["name", "tag"]
    assert update.body_argument is None


def test_a_body_whose_property_names_a_parameter_goes_whole_under_body(tools: dict[str, Operation]) -> None:
    create = tools["pets_create_v2"]

    assert create.input_schema["properties"] == {
        "name": {"type": "string", "description": "Check the name only"},
        "body": NEW_PET,
    }
    assert create.input_schema["required"] == ["body"]
    assert create.body_argument == "body"


def test_a_body_that_is_not_an_object_goes_under_body_with_its_json_media_type(tools: dict[str, Operation]) -> None:
    photos = tools["pets_photos_2"]

    assert photos.input_schema["properties"]["body"] == {"type": "array", "items": {"type": "string"}}
    assert photos.input_schema["required"] == ["petId"]
    assert photos.media_type == "application/merge-patch+json"


def test_a_recursive_schema_is_cut_at_the_point_it_recurs(tools: dict[str, Operation]) -> None:
    schema = tools["plantTree"].input_schema

    assert schema["required"] == []
    assert schema["properties"]["value"] == {"type": "string"}
    children = schema["properties"]["children"]
    assert children["type"] == "array"
    assert children["items"]["type"] == "object"
    assert "recursive" in children["items"]["description"]
    json.dumps(schema)  # a tree, no cycle left


def test_an_operation_without_a_json_body_is_left_out_and_said_why() -> None:
    skipped = skipped_operations(load_document(PETSTORE))

    assert skipped == ["POST /upload: its request body is multipart/form-data; only JSON request bodies are supported"]


def test_odd_operation_ids_are_sanitized_truncated_and_deduplicated() -> None:
    long_id = "a" * 70
    document = minimal(
        {
            "/a": {"get": {"operationId": long_id}, "post": {"operationId": long_id}},
            "/b": {"get": {"operationId": "Ä.b c"}, "post": {"operationId": "b/c"}},
            "/": {"get": {}},
        }
    )

    names = [operation.name for operation in operations(document)]

    assert names == ["a" * 64, "a" * 62 + "_2", "b_c", "b_c_2", "get"]


def test_a_parameter_named_like_another_in_a_different_place_gets_its_location_as_a_suffix() -> None:
    document = minimal(
        {"/items/{id}": {"get": {"parameters": [{"name": "id", "in": "path"}, {"name": "id", "in": "query"}]}}}
    )

    [operation] = operations(document)
    request = build_request(operation, BASE_URL, {"id": 3, "id_query": "x"})

    assert list(operation.input_schema["properties"]) == ["id", "id_query"]
    assert request.url == "https://api.example.com/v1/items/3"
    assert request.query == [("id", "x")]


def test_a_request_fills_the_path_under_the_base_urls_own_path(tools: dict[str, Operation]) -> None:
    request = build_request(tools["delete_pets_petId"], BASE_URL, {"petId": 7})

    assert request.method == "DELETE"
    assert request.url == "https://api.example.com/v1/pets/7"
    assert request.query == []
    assert request.headers == {}
    assert request.json is None


def test_a_base_url_with_a_trailing_slash_or_no_path_joins_cleanly(tools: dict[str, Operation]) -> None:
    with_slash = build_request(tools["delete_pets_petId"], "https://api.example.com/v1/", {"petId": 7})
    bare = build_request(tools["delete_pets_petId"], "http://localhost:8080", {"petId": 7})

    assert with_slash.url == "https://api.example.com/v1/pets/7"
    assert bare.url == "http://localhost:8080/pets/7"


def test_a_path_argument_cannot_add_segments_or_climb_out(tools: dict[str, Operation]) -> None:
    request = build_request(tools["get_pets_petId"], BASE_URL, {"petId": "../x?y#z"})

    assert request.url == "https://api.example.com/v1/pets/..%2Fx%3Fy%23z"
    for value in ("..", ".", ""):
        with pytest.raises(OpenApiProblem, match="petId"):
            build_request(tools["get_pets_petId"], BASE_URL, {"petId": value})


def test_query_lists_repeat_their_key_and_headers_are_sent_as_given(tools: dict[str, Operation]) -> None:
    arguments = {"limit": 10, "tags": ["dog", "cat"], "filter_status": "sold", "X-Request-Id": "r-1"}

    request = build_request(tools["listPets"], BASE_URL, arguments)

    assert request.url == "https://api.example.com/v1/pets"
    assert request.query == [("limit", "10"), ("tags", "dog"), ("tags", "cat"), ("filter[status]", "sold")]
    assert request.headers == {"X-Request-Id": "r-1"}


def test_the_server_configs_headers_win_over_a_header_argument_of_the_same_name(tools: dict[str, Operation]) -> None:
    arguments = {"Authorization": "Bearer agent", "X-Request-Id": "r-1"}

    request = build_request(tools["listPets"], BASE_URL, arguments, headers={"authorization": "Bearer secret"})

    assert request.headers == {"X-Request-Id": "r-1", "authorization": "Bearer secret"}


def test_a_header_argument_cannot_inject_another_header(tools: dict[str, Operation]) -> None:
    with pytest.raises(OpenApiProblem, match="X-Request-Id"):
        build_request(tools["listPets"], BASE_URL, {"X-Request-Id": "r-1\r\nX-Admin: yes"})


def test_merged_body_arguments_become_the_json_body(tools: dict[str, Operation]) -> None:
    request = build_request(tools["updatePet"], BASE_URL, {"petId": 7, "name": "Rex"})
    without_body = build_request(tools["updatePet"], BASE_URL, {"petId": 7})

    assert request.method == "PUT"
    assert request.url == "https://api.example.com/v1/pets/7"
    assert request.json == {"name": "Rex"}
    assert request.headers == {"Content-Type": "application/json"}
    assert without_body.json is None
    assert without_body.headers == {}


def test_a_body_under_body_is_sent_whole_beside_the_parameter_it_collided_with(tools: dict[str, Operation]) -> None:
    arguments = {"name": "Rex?", "body": {"name": "Rex", "tag": "dog"}}

    request = build_request(tools["pets_create_v2"], BASE_URL, arguments)

    assert request.method == "POST"
    assert request.query == [("name", "Rex?")]
    assert request.json == {"name": "Rex", "tag": "dog"}


def test_missing_required_arguments_are_named(tools: dict[str, Operation]) -> None:
    with pytest.raises(OpenApiProblem, match=r"Missing required argument.*`body`"):
        build_request(tools["pets_create_v2"], BASE_URL, {"name": "Rex"})
    with pytest.raises(OpenApiProblem, match="`petId`"):
        build_request(tools["delete_pets_petId"], BASE_URL, {"petId": None})


def test_unknown_arguments_are_named_with_the_ones_the_tool_takes(tools: dict[str, Operation]) -> None:
    with pytest.raises(OpenApiProblem, match=r"Unknown argument.*`colour`.*takes `petId`"):
        build_request(tools["delete_pets_petId"], BASE_URL, {"petId": 7, "colour": "red"})


def test_a_base_url_that_is_not_http_is_refused(tools: dict[str, Operation]) -> None:
    for base_url in ("ftp://api.example.com", "/v1", "https://api.example.com/v1?key=x"):
        with pytest.raises(OpenApiProblem, match="base URL"):
            build_request(tools["delete_pets_petId"], base_url, {"petId": 7})


def test_a_path_template_that_climbs_out_of_the_base_path_is_refused() -> None:
    with pytest.raises(OpenApiProblem, match=r"`\.` or `\.\.` segments"):
        operations(minimal({"/pets/../admin": {"get": {}}}))


def test_a_json_document_is_accepted() -> None:
    document = minimal({"/ping": {"get": {"operationId": "ping"}}})

    loaded = load_document(json.dumps(document).encode())

    assert loaded == document
    assert [operation.name for operation in operations(loaded)] == ["ping"]


def test_a_swagger_2_document_is_refused_with_a_way_to_convert_it() -> None:
    with pytest.raises(OpenApiProblem, match=r"Swagger 2\.0.*convert it to OpenAPI 3"):
        load_document("swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}\n")


def test_a_document_without_openapi_3_or_paths_is_refused() -> None:
    with pytest.raises(OpenApiProblem, match="no `openapi` field"):
        load_document("info: {title: t}\npaths: {}\n")
    with pytest.raises(OpenApiProblem, match="not supported"):
        load_document("openapi: 4.0.0\npaths: {}\n")
    with pytest.raises(OpenApiProblem, match="`paths` mapping"):
        load_document("openapi: 3.0.0\npaths: [a]\n")
    with pytest.raises(OpenApiProblem, match="no operation"):
        load_document("openapi: 3.0.0\npaths: {}\n")


@pytest.mark.parametrize("ref", ["https://example.com/schemas.yaml#/Pet", "other.yaml#/components/schemas/Pet"])
def test_a_reference_outside_the_document_is_refused(ref: str) -> None:
    body = {"content": {"application/json": {"schema": {"$ref": ref}}}}

    with pytest.raises(OpenApiProblem, match="points outside this document"):
        load_document(json.dumps(minimal({"/pets": {"post": {"requestBody": body}}})))


def test_a_reference_to_nothing_is_refused() -> None:
    parameters = [{"$ref": "#/components/parameters/Missing"}]

    with pytest.raises(OpenApiProblem, match="points at nothing"):
        operations(minimal({"/pets": {"get": {"parameters": parameters}}}))


def test_a_document_too_big_or_with_too_many_operations_is_refused() -> None:
    many = minimal({f"/p{index}": {"get": {}} for index in range(MAX_OPERATIONS + 1)})

    with pytest.raises(OpenApiProblem, match="bytes"):
        load_document(b"#" * (MAX_BYTES + 1))
    with pytest.raises(OpenApiProblem, match=f"{MAX_OPERATIONS + 1} operations"):
        load_document(json.dumps(many))


def test_a_cyclic_yaml_alias_is_refused() -> None:
    with pytest.raises(OpenApiProblem, match="levels deep"):
        load_document("openapi: 3.0.0\npaths: {}\nx: &loop [*loop]\n")


def test_yaml_dates_and_numeric_keys_become_json_data() -> None:
    text = "openapi: 3.0.0\ninfo: {title: t, version: 2024-01-31}\npaths:\n  /x:\n    get:\n      responses: {200: {description: ok}}\n"

    document = load_document(text)

    assert document["info"]["version"] == "2024-01-31"
    assert document["paths"]["/x"]["get"]["responses"] == {"200": {"description": "ok"}}
    json.dumps(document)
