"""End-to-end tests: real controllers, browsers and receivers (a package, so module names stay unique)."""
