"""The core of jiaoying: domain model, store, dispatcher, acknowledgements, audit and HTTP API.

It defines the Channel port that adapters implement and imports no other project package.
"""
