"""CAP 1.2 in and out (OASIS Common Alerting Protocol; China's profile GB/T 35965.1-2018).

In: a message is read without resolving anything (safe), upgraded from 1.1 if need be (upgrade), validated
against the OASIS schema shipped in schema/ (schema) and against the rules the schema cannot say (rules), read
into plain values (message), mapped to the engine's own alert request (mapping) and taken by the importer
(importer): issued, updated or lifted, kept verbatim and audited. Out: an alert as CAP 1.2 (export) and the
public Atom feed of active real alerts (feed).
"""
