"""LoomOS security: who you are (authn), what you may do (authz: Casbin RBAC, quotas, admission),
and encryption at rest and in transit (crypto). Server-side library code; the API, the workers
and the CLI use it. Importing this package (and each subpackage's `settings` module) is cheap:
heavy dependencies are imported where they are used."""
