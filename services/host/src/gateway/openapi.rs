//! An OpenAPI 3 document for the gateway's routes, derived from the same
//! descriptors: paths, parameters, bodies and the JSON shape of every
//! message involved.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use super::{BodyRule, Route};

pub(super) fn document(title: &str, routes: &[Route]) -> Value {
    let mut schemas = BTreeMap::new();
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for route in routes {
        let input = route.method.input();
        let mut parameters: Vec<Value> = route
            .template
            .variables()
            .filter_map(|variable| input.get_field_by_name(variable))
            .map(|field| {
                json!({ "name": field.name(), "in": "path", "required": true, "schema": field_schema(&field, &mut schemas) })
            })
            .collect();
        let operation = paths.entry(openapi_path(&route.template.text)).or_default();
        let mut body = None;
        match &route.body {
            BodyRule::None => parameters.extend(
                input
                    .fields()
                    .filter(|field| !route.template.variables().any(|v| v == field.name()))
                    .filter(|field| !matches!(field.kind(), Kind::Message(_) | Kind::Bytes))
                    .map(|field| {
                        json!({ "name": field.json_name(), "in": "query", "schema": field_schema(&field, &mut schemas) })
                    }),
            ),
            BodyRule::Whole => body = Some(message_ref(&input, &mut schemas)),
            BodyRule::Field(field) => body = Some(field_schema(field, &mut schemas)),
        }
        let mut spec = json!({
            "operationId": format!("{}_{}", route.method.parent_service().name(), route.method.name()),
            "tags": [route.method.parent_service().name()],
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": { "application/json": { "schema": message_ref(&route.method.output(), &mut schemas) } }
                },
                "default": {
                    "description": "An error: the gRPC status code, its message and details",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } }
                }
            },
            "security": [{ "bearer": [] }, {}],
        });
        if let Some(schema) = body {
            spec["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        operation.insert(route.http_method.as_str().to_lowercase(), spec);
    }
    schemas.insert(
        "Status".to_owned(),
        json!({
            "type": "object",
            "properties": {
                "code": { "type": "integer", "format": "int32" },
                "message": { "type": "string" },
                "details": { "type": "array", "items": { "type": "object" } }
            }
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": { "title": title, "version": "v1" },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } }
        }
    })
}

/// `/v1/users/{id}` stays; `{id=*}` loses its pattern.
fn openapi_path(template: &str) -> String {
    let mut path = String::new();
    let mut skipping = false;
    for c in template.chars() {
        match c {
            '=' if path.rfind('{') > path.rfind('}') => skipping = true,
            '}' => {
                skipping = false;
                path.push(c);
            }
            _ if skipping => {}
            _ => path.push(c),
        }
    }
    path
}

fn message_ref(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    match message.full_name() {
        "google.protobuf.Timestamp" => return json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => return json!({ "type": "string" }),
        _ => {}
    }
    let name = message.full_name().to_owned();
    if !schemas.contains_key(&name) {
        // Placed first, so that recursive messages end.
        schemas.insert(name.clone(), Value::Null);
        let properties: serde_json::Map<String, Value> = message
            .fields()
            .map(|field| (field.json_name().to_owned(), field_schema(&field, schemas)))
            .collect();
        schemas.insert(
            name.clone(),
            json!({ "type": "object", "properties": properties }),
        );
    }
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn field_schema(field: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let item = match field.kind() {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0 })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::Double => json!({ "type": "number", "format": "double" }),
        Kind::Float => json!({ "type": "number", "format": "float" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Enum(values) => {
            json!({ "type": "string", "enum": values.values().map(|v| v.name().to_owned()).collect::<Vec<_>>() })
        }
        Kind::Message(message) => message_ref(&message, schemas),
    };
    if field.is_list() {
        json!({ "type": "array", "items": item })
    } else {
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_openapi_paths() {
        assert_eq!(openapi_path("/v1/users/{id}"), "/v1/users/{id}");
        assert_eq!(openapi_path("/v1/users:lookup"), "/v1/users:lookup");
        assert_eq!(openapi_path("/v1/{name=users/*}/x"), "/v1/{name}/x");
    }
}
