"""Benchmarks and fuzzing for fhirserver: `make bench` (bench.run), `make fuzz` (bench.fuzz).

Everything here talks to a real server started as a subprocess on 127.0.0.1.
"""
