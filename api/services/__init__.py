"""LoomCtl's logic, one module per resource. Routers parse requests and answer with what these
return; these raise the domain errors of loomos.api.errors, mapped to HTTP in loomos.api.app."""
