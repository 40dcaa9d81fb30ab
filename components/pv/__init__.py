"""PV plants: pvlib physics for a whole fleet of plants, with weather from clear sky or a file."""
