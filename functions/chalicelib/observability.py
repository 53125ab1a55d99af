"""Structured logging. Log lines carry request ids, route templates, resource ids and outcomes,
never names, card numbers, phones, diagnoses, bodies, query strings or raw paths."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from chalicelib.config import get_settings

logger = Logger(service=get_settings().service_name, log_uncaught_exceptions=False)
