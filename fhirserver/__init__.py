"""fhirserver: a FHIR R4-native appointment scheduling server."""

__version__ = "0.1.0"
