"""A plugin whose import fails; the exception text quotes a secret, which must never show."""
from qp_test_plugin import record_import

record_import(__name__)
raise ImportError("could not load: sk-qp-IMPORT-SECRET")
