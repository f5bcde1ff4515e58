"""Server-rendered dashboard pages, behind the same login as the API."""
