"""A local implementation of the Realtime API server side: the default upstream and test double."""
