"""PHI at rest: AES-256-GCM sealed records, blind-index search tokens, key rotation.

See docs/phi.md. `codec.PhiCodec` is what the rest of the server holds (`cipher` seals,
`blind` tokenises, `keyring` keeps the keys); `rotation` re-seals stored records under the
active key (`fhirserver keys rotate`, `cli`).
"""
