"""A two-service example: ``sentiment`` scores text, ``feedback`` stores feedback and calls ``sentiment``."""
