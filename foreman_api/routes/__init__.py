"""HTTP routes: parse the request, call the domain layer, shape the response."""
