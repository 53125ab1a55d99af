# The front door: every routine action is one target. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/functions:$(CURDIR)

.PHONY: help venv template check-infra up down start-refresh psql-analytic test test-unit test-integration test-e2e lint bench bench-api bench-access bench-local bench-cold-start bench-history bench-pipeline bench-pipeline-10m run token migrate clean reset openapi refresh

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt functions/requirements.txt pipeline/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.2.1  # pinned: chalice 1.34 requires pip<26.3
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the pinned dependencies

INFRA_STAMP := .venv-infra/.installed
$(INFRA_STAMP): infra/requirements.txt
	$(PYTHON) -m venv .venv-infra
	.venv-infra/bin/python -m pip install --quiet -r infra/requirements.txt
	touch $(INFRA_STAMP)

MINISTACK_STAMP := .venv-ministack/.installed
$(MINISTACK_STAMP): infra/localstack/requirements-ministack.txt
	$(PYTHON) -m venv .venv-ministack
	.venv-ministack/bin/python -m pip install --quiet -r infra/localstack/requirements-ministack.txt
	touch $(MINISTACK_STAMP)

ministack: $(MINISTACK_STAMP) ## install the no-Docker AWS emulator into .venv-ministack

template: $(STAMP) ## regenerate template.yaml and .build/deployment.zip from the Chalice app
	$(PY) infra/build_template.py

check-infra: $(STAMP) $(INFRA_STAMP) ## template and openapi.json drift, cfn-lint, sam validate --lint, compose schema
	$(PY) infra/build_template.py --check
	$(PY) -m tools.cli openapi --check
	.venv-infra/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 .venv-infra/bin/sam validate --lint --region us-east-1 -t template.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

test: $(STAMP) $(MINISTACK_STAMP) ## lint, infrastructure checks, then the whole suite against a throwaway PostgreSQL
	$(PY) -m ruff check .
	$(MAKE) --no-print-directory check-infra
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no I/O)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## integration tests only (a throwaway PostgreSQL, Sling, PgBouncer; no emulator)
	$(PY) -m pytest -n 2 tests/integration tests/infrastructure $(PYTEST_ARGS)

test-e2e: $(STAMP) $(MINISTACK_STAMP) ## end-to-end tests only (the stack deployed into the emulator, over HTTP)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(PY) -m ruff check .

bench: $(STAMP) $(MINISTACK_STAMP) ## all benchmarks, ≈ 10 min (results in bench/results/)
	$(PY) bench/api_latency.py
	$(PY) bench/cold_start.py
	$(PY) bench/access_latency.py
	$(PY) bench/pipeline_refresh.py

bench-api: $(STAMP) $(MINISTACK_STAMP) ## API latency, cold start and access-controlled reads (≈ 4 min; SIZES=2000,20000 for a quick run)
	$(PY) bench/api_latency.py
	$(PY) bench/cold_start.py
	$(PY) bench/access_latency.py --sizes $${SIZES:-10000,1000000}

bench-access: $(STAMP) ## reads as admin/clinician/patient at 10k and 1M patients (≈ 3 min; SIZES=2000,20000 for a quick run)
	$(PY) bench/access_latency.py --sizes $${SIZES:-10000,1000000}

bench-cold-start: $(STAMP) $(MINISTACK_STAMP) ## what a new Lambda container pays: import, secret, TLS connect, first request; in the emulator too (≈ 3 min)
	$(PY) bench/cold_start.py

bench-history: $(STAMP) ## what keeping every version costs PUT and PATCH, history on vs off in alternating blocks (≈ 2 min)
	$(PY) bench/history_cost.py

bench-local: $(STAMP) ## keep-alive latency of the local server: chalice local vs tools/local_server vs in-process (≈ 30 s)
	$(PY) bench/local_serving.py

bench-pipeline: $(STAMP) ## analytics refresh on 1,000,000 prescriptions (≈ 5 min; PRESCRIPTIONS=20000 for a quick run)
	$(PY) bench/pipeline_refresh.py --prescriptions $${PRESCRIPTIONS:-1000000}

bench-pipeline-10m: $(STAMP) ## first load + 1% refresh at 10,000,000 prescriptions next to COPY (≈ 30 min, stopped after MINUTES=90; ≈ 15 GB under /tmp)
	timeout --signal=TERM $${MINUTES:-90}m $(PY) bench/pipeline_refresh.py --prescriptions 10000000 \
		--scenario one-percent --report-name pipeline_refresh_10m

.PHONY: bench-export
bench-export: $(STAMP) $(MINISTACK_STAMP) ## FHIR bulk export of 100,000 and 1,000,000 prescriptions next to COPY, memory sampled (≈ 5 min; SIZES=20000,100000 to try)
	$(PY) bench/bulk_export.py --sizes $${SIZES:-100000,1000000}

.PHONY: bench-load bench-soak
bench-load: $(STAMP) $(MINISTACK_STAMP) ## load test, 1→64 clinicians, make run and make up, with and without PgBouncer (≈ 25 min; TARGETS=run STEP_SECONDS=5 to try)
	$(PY) bench/load_test.py steps --targets $${TARGETS:-run,run+pooler,up,up+pooler} --step-seconds $${STEP_SECONDS:-20}

bench-soak: $(STAMP) $(MINISTACK_STAMP) ## soak: 10 min at a steady 20 req/s against make up (DURATION=60 to try; TARGET=run, RATE=...)
	$(PY) bench/load_test.py soak --target $${TARGET:-up} --duration $${DURATION:-600} --rate $${RATE:-20}

up: $(STAMP) $(MINISTACK_STAMP) ## the whole system locally, no Docker: PostgreSQL, AWS emulator, Prefect, deployed stack (POOLER=pgbouncer)
	$(PY) -m tools.cli up $(if $(POOLER),--pooler $(POOLER))

down: $(STAMP) ## stop what `make up` started (same as Ctrl-C in its terminal)
	$(PY) -m tools.cli down

run: $(STAMP) ## lighter: PostgreSQL + the API under chalice local (no emulator, no Prefect; POOLER=pgbouncer)
	$(PY) -m tools.cli run $(if $(POOLER),--pooler $(POOLER))

start-refresh: $(STAMP) ## start the refresh state machine of the stack `make up` runs and wait for it
	$(PY) -m tools.cli start-refresh

psql-analytic: ## psql into the local analytic database
	psql "$$(grep ANALYTIC_DB_URL .local/pipeline.env | cut -d= -f2-)"

token: $(STAMP) ## print a dev token (KIND=admin|clinician|patient, PATIENT_ID=N for a patient, SCOPES="..." to override)
	@$(PY) -m tools.cli dev-token --kind "$${KIND:-admin}" $${PATIENT_ID:+--patient-id "$$PATIENT_ID"} \
		$${SCOPES:+--scopes "$$SCOPES"}

migrate: $(STAMP) ## apply database migrations to DATABASE_URL
	$(PY) -m tools.cli migrate

openapi: $(STAMP) ## regenerate openapi.json (committed) from the route tables and models
	@$(PY) -m tools.cli openapi --write

refresh: $(STAMP) ## run one analytics refresh by hand on the local databases (MODE=full to rebuild)
	set -a && . .local/pipeline.env && set +a && PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 \
		$(PY) -m pipeline.flow --mode $${MODE:-incremental}

.PHONY: verify-audit
verify-audit: $(STAMP) ## check the audit trail's seal chain; names the first altered/deleted/inserted event (ANCHORS="N:digest ...")
	$(PY) -m tools.cli verify-audit $(foreach anchor,$(ANCHORS),--anchor $(anchor)) $(VERIFY_ARGS)

reset: ## stop the local database and delete its data
	-$(PY) tools/pgcluster.py stop --data-dir .local/pg
	rm -rf .local

clean: ## remove the virtual environments, node modules, build output and caches
	rm -rf $(VENV) .venv-infra .venv-ministack postman/node_modules .build .pytest_cache .ruff_cache

.PHONY: postman
POSTMAN_STACK ?= .local/stack.json
postman: $(STAMP) ## run the Postman collection with Newman against the stack `make up` runs
	@test -f $(POSTMAN_STACK) || { echo "no $(POSTMAN_STACK): start the stack with 'make up' in another terminal"; exit 1; }
	@test -x postman/node_modules/.bin/newman || (cd postman && npm ci --no-audit --no-fund)
	@api="$$($(PY) -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_url"])' $(POSTMAN_STACK))" && \
		token="$$($(PY) -m tools.cli dev-token --kind admin)" && \
		clinician="$$($(PY) -m tools.cli dev-token --kind clinician --subject postman-clinician)" && \
		patient="$$($(PY) -m tools.cli dev-token --kind patient --patient-id 999999999)" && \
		cd postman && node_modules/.bin/newman run medical-records.postman_collection.json \
			-e local.postman_environment.json --env-var "baseUrl=$$api" --env-var "token=$$token" \
			--env-var "clinicianToken=$$clinician" --env-var "patientToken=$$patient" \
			--timeout-request 60000 $(NEWMAN_ARGS)
