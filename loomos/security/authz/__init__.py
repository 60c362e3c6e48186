"""Authorization: Casbin RBAC over the policies in policies/, role and team constraints,
quota reservations, and the admission check a job workflow runs first."""
