"""The OpenAPI 3.1 description of ``POST /usage``, served at ``GET /usage/openapi.json``."""

from __future__ import annotations

from typing import Any

from bridge.usage.records import MAX_QUANTITY

_RECORD: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "product_id", "quantity", "idempotency_key", "timestamp"],
    "properties": {
        "key": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[!-~]+$"},
        "product_id": {"type": "integer", "description": "a product in [[usage.product]]"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
        "idempotency_key": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "description": "the same key is the same record: a repeat changes nothing",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 with a zone: when the usage happened",
        },
        "meter": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$",
            "description": "optional; aggregated apart, and may name its own Stripe event",
        },
    },
}

_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["index", "outcome"],
    "properties": {
        "index": {"type": "integer", "description": "the record's place in the request"},
        "outcome": {
            "enum": ["accepted", "duplicate", "conflict", "refused"],
            "description": "conflict: the idempotency key was used for another record",
        },
        "idempotency_key": {"type": "string"},
        "aggregate": {"type": "string", "description": "the intent that will bill it"},
        "reason": {"type": "string", "description": "why it was refused or is a conflict"},
    },
}

_ERROR: dict[str, Any] = {
    "description": "nothing was stored",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
            }
        }
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "cryptolens-bridge usage API",
        "version": "1",
        "description": (
            "Report metered usage; each unit is billed once in its product's sink "
            "(Cryptolens RecordUsage or a Stripe meter event)."
        ),
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"UsageRecord": _RECORD, "UsageResult": _RESULT},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/usage": {
            "post": {
                "summary": "Report one usage record, or a batch of up to 1,000",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/UsageRecord"},
                                    {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 1000,
                                        "items": {},
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "each record's outcome, in the order sent",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "accepted": {"type": "integer"},
                                        "duplicate": {"type": "integer"},
                                        "conflict": {"type": "integer"},
                                        "refused": {"type": "integer"},
                                        "results": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/UsageResult"},
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "400": {**_ERROR, "description": "not a JSON object or array"},
                    "401": {**_ERROR, "description": "no valid bearer token"},
                    "404": {**_ERROR, "description": "usage reporting is not configured"},
                    "413": {**_ERROR, "description": "body or batch too large"},
                    "503": {**_ERROR, "description": "the database is unavailable; retry"},
                },
            }
        }
    },
}
