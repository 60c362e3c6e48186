"""Policy as data, installed as `loomos.policies` (package data, read with importlib.resources):

- `model.conf`: the Casbin model. RBAC with domains: a team is a domain; a grant in team "*"
  holds in every team; role hierarchy through grouping rows in team "*"; an allow-list with
  default deny (a request no rule allows is refused).
- `policy.csv`: the built-in roles' permissions (the product documents' lists) and their
  hierarchy. Subjects are `user:<name>`, roles `role:<name>`, so a user called like a role
  never inherits its permissions.
- `roles.yaml`: each built-in role's description and constraints (quotas and allow-lists
  the admission step applies).

They seed the database on first start (loomos.security.authz.seed); after that the admin API
and `loomos roles|grants` edit the policy there, and every process reloads it on change.
"""
