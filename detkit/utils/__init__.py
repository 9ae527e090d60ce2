"""Utilities shared by the engine: distributed helpers, events and writers, logging, drawing."""
