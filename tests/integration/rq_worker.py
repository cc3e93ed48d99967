"""RQ's command line in a process that loaded the Django project first, as
django-rq's ``manage.py rqworker`` does: ``python -m tests.integration.rq_worker worker ...``."""

import sys

import django
from rq.cli import main

django.setup()
sys.exit(main())
