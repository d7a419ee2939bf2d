"""The console API's OpenAPI 3.1 document, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from sealfuse import __version__

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JOB = {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
_REF = [{"name": "ref", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "sealfuse console API", "version": __version__,
             "description": "Submit face-swap jobs to the appliance's watch folder, follow and collect them. "
                            "Sign in with POST /api/v1/login and send the token as `Authorization: Bearer`."},
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/login": {"post": {
            "summary": "Sign in; returns a bearer token", "security": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["username", "password"],
                "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}}}},
            "responses": {"200": {"description": "token", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"token": {"type": "string"}, "token_type": {"const": "bearer"},
                                                 "expires_in": {"type": "integer"}, "user": {"type": "string"},
                                                 "role": {"type": "string"}}}}}},
                          "401": _ERR, "429": _ERR}}},
        "/api/v1/logout": {"post": {"summary": "End this token's session", "responses": {"200": {"description": "ok"}}}},
        "/api/v1/me": {"get": {"summary": "Who am I", "responses": {"200": {"description": "the user"}, "401": _ERR}}},
        "/api/v1/options": {"get": {"summary": "Options and models available on this appliance",
                                    "responses": {"200": {"description": "available options"}}}},
        "/api/v1/jobs": {
            "get": {"summary": "Jobs this user may see, newest first",
                    "responses": {"200": {"description": "jobs", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"jobs": {"type": "array",
                                                                  "items": {"$ref": "#/components/schemas/Job"}}}}}}}}},
            "post": {"summary": "Submit a job (streamed into the spool's inbox)",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["source"],
                         "properties": {
                             "source": {"type": "string", "format": "binary", "description": "face image"},
                             "target": {"type": "string", "format": "binary", "description": "image or video"},
                             "share_target": {"type": "string", "description": "instead of target: a path in the share"},
                             "reference": {"type": "string", "format": "binary"},
                             "label": {"type": "string", "maxLength": 200},
                             "options": {"type": "string", "description": "JSON object of job options "
                                                                          "(see docs/watch-folder.md)"}}}}}},
                     "responses": {"201": _JOB, "400": _ERR, "413": _ERR, "415": _ERR, "422": _ERR}}},
        "/api/v1/jobs/{ref}": {"get": {"summary": "One job", "parameters": _REF, "responses": {"200": _JOB, "404": _ERR}}},
        "/api/v1/jobs/{ref}/events": {"get": {
            "summary": "Server-sent events: `job` (the job's view) on every change, `end` when it is over",
            "parameters": _REF, "responses": {"200": {"description": "text/event-stream"}}}},
        "/api/v1/jobs/{ref}/result": {"get": {
            "summary": "Download the result (submitters: own jobs; reviewers: all)", "parameters": _REF,
            "responses": {"200": {"description": "the image or video"}, "404": _ERR, "410": _ERR}}},
        "/api/v1/jobs/{ref}/media": {"delete": {
            "summary": "Delete the job's media (result and inputs); the record stays. A job still queued or running "
                       "is removed first (`removal_requested`: true; it then shows state `removed`); a finished "
                       "job's media is deleted by the watch daemon on request (`media_deletion_requested`: true; "
                       "the job then shows `media_deleted`)", "parameters": _REF,
            "responses": {"200": {"description": "removed files"}, "404": _ERR}}},
        "/api/v1/audit": {"get": {"summary": "Audit log tail and chain check (auditor, admin)",
                                  "responses": {"200": {"description": "entries"}, "403": _ERR}}},
        "/api/v1/users": {
            "get": {"summary": "Accounts (admin)", "responses": {"200": {"description": "users"}, "403": _ERR}},
            "post": {"summary": "add | disable | enable | passwd an account (admin)",
                     "responses": {"200": {"description": "ok"}, "403": _ERR}}},
        "/healthz": {"get": {"summary": "Liveness (no login)", "security": [],
                             "responses": {"200": {"description": "ok"}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {
                "ok": {"const": False}, "error": {"type": "string"}, "reason": {"type": "string"},
                "message": {"type": "string"}, "evidence": {"type": "object"}}},
            "Job": {"type": "object", "properties": {
                "ref": {"type": "string"}, "job_id": {"type": ["string", "null"]}, "user": {"type": "string"},
                "state": {"enum": ["submitted", "queued", "running", "done", "failed", "removed"]},
                "queue_position": {"type": ["integer", "null"]},
                "progress": {"type": "object", "properties": {
                    "done": {"type": "integer"}, "total": {"type": ["integer", "null"]},
                    "fraction": {"type": ["number", "null"]}}},
                "reason": {"type": ["string", "null"]}, "reason_text": {"type": ["string", "null"]},
                "message": {"type": ["string", "null"]}, "output": {"type": ["string", "null"]},
                "media_deleted": {"type": ["string", "null"]},
                "media_delete_requested": {"type": ["string", "null"]}}},
        },
    },
}
