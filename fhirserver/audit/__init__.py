"""The audit trail: IHE BALP AuditEvents in an append-only, hash-chained collection.

- `events`: builds the AuditEvent resources (pure functions).
- `facts`: what one HTTP request tells the trail (path -> interaction, patients, entities).
- `chain`: the hash chain (record hash, verification).
- `writer`: the per-process group-commit writer requests await.
- `middleware`: the ASGI hook every audited request passes through.
- `cli`: `fhirserver audit verify`.

See docs/audit.md.
"""
