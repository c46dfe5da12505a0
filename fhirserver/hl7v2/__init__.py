"""hl7v2 package."""
