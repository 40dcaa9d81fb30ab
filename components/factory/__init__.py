"""Factories: SimPy production lines with shift calendars, base loads, critical and deferrable shares."""
