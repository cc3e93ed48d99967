from django.db import models


class AuditRow(models.Model):
    event = models.CharField(max_length=100)
