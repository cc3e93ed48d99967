"""A model for ORM tests."""

from django.db import models


class Item(models.Model):
    """A named row."""

    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name
