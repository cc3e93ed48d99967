"""A small Django project the pytest plugin's own tests run pytest against."""
