"""Small HTTP servers of our own that tests start on 127.0.0.1."""
