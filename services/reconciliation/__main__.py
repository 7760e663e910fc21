from services.reconciliation.app import build_worker
from shared.runtime.run import run_worker

run_worker(build_worker())
