# Umbra's default Rego policy: data.umbra.authz.decision on the input document
# described in docs/policy.md, configured by data.umbra (see data.json).
#
# The same decisions as Umbra's native rules, for deployments that prefer
# Rego: default deny; users and groups granted per service, with optional
# methods, whole-segment path prefixes, ports, source networks, a time window,
# a maximum risk, a device compliance level and a maximum MFA age;
# service-to-service rules as in seed 001 (source, target, methods, paths);
# and DESIGN.md's risk bands.
#
# Answer: {"allow": bool, "conditions": [string], "reasons": [string]}.
# allow=false with "step_up_mfa" among the conditions means "allowed after a
# fresh MFA"; allow=true with conditions means "allowed, with these
# obligations".
package umbra.authz

import rego.v1

# Configuration lives beside this package, under data.umbra; each key is
# read by its own path (reading data.umbra whole would include this package).
default bands := {"step_up": 30, "reverify": 50, "restricted": 70, "deny": 80}

bands := object.union({"step_up": 30, "reverify": 50, "restricted": 70, "deny": 80}, data.umbra.risk)

default step_up_window := 900

step_up_window := data.umbra.step_up_mfa_max_age_seconds

# Every fact has a default, so that a missing input (or part of one) makes
# a deny, never a rule that silently does not fire. A missing score counts
# as the worst.
default risk := 100

risk := input.risk.score

default req := {}

req := input.request

default subject := {}

subject := input.subject

default service_name := ""

service_name := req.service

service := data.umbra.services[service_name]

default mfa_age := null

mfa_age := input.context.mfa_age_s

# Optional values of the input arrive as null when absent.
text(x) := x if is_string(x)

else := sprintf("%d", [x]) if is_number(x)

else := "(none)"

# --- who is granted ---------------------------------------------------------

user_grants contains sprintf("user %s is granted %s", [subject.user, service_name]) if {
	is_string(subject.user)
	some allowed_user in object.get(service, "users", [])
	allowed_user in {subject.user, "*"}
}

user_grants contains sprintf("group %s is granted %s", [g, service_name]) if {
	some g in object.get(subject, "groups", [])
	g in object.get(service, "groups", [])
}

user_grants contains sprintf("%s is granted %s", [subject.spiffe_id, service_name]) if {
	is_string(subject.spiffe_id)
	subject.spiffe_id in object.get(service, "spiffe_ids", [])
}

workload_grants contains sprintf("workload %s may call %s", [subject.service, service_name]) if {
	is_string(subject.service)
	some rule in data.umbra.workloads
	rule.source == subject.service
	rule.target == service_name
	req.method in rule.methods
	some prefix in rule.paths
	within(req.path, prefix)
}

# Whole-segment prefixes: /api matches /api and /api/x, not /apix. Paths in
# the input are normalized by Umbra.
within(path, "/") if is_string(path)

within(path, prefix) if path == trim_suffix(prefix, "/")

within(path, prefix) if {
	is_string(path)
	startswith(path, concat("", [trim_suffix(prefix, "/"), "/"]))
}

grants := user_grants | workload_grants

# User grants are checked against the service's own limits; a workload's
# rule already named its methods and paths.
user_grant if count(user_grants) > 0

# --- why not ----------------------------------------------------------------

deny contains sprintf("nothing grants %s access to %s", [who, service_name]) if count(grants) == 0

who := sprintf("user %s", [subject.user]) if {
	is_string(subject.user)
} else := sprintf("workload %s", [subject.service]) if {
	is_string(subject.service)
} else := "an unnamed subject"

deny contains sprintf("risk %d is at or above %d: new access is denied until an admin approves", [risk, bands.deny]) if {
	risk >= bands.deny
}

deny contains sprintf("risk %d is above %d, the most %s allows", [risk, service.max_risk, service_name]) if {
	user_grant
	risk > service.max_risk
}

deny contains sprintf("method %s is not allowed on %s", [text(req.method), service_name]) if {
	user_grant
	service.methods
	not req.method in service.methods
}

deny contains sprintf("path %s is not under the prefixes of %s", [text(req.path), service_name]) if {
	user_grant
	service.paths
	not path_allowed
}

path_allowed if {
	some prefix in service.paths
	within(req.path, prefix)
}

deny contains sprintf("port %s is not allowed on %s", [text(req.port), service_name]) if {
	user_grant
	service.ports
	not req.port in service.ports
}

deny contains sprintf("source address %s is outside the networks of %s", [text(source), service_name]) if {
	user_grant
	service.source_networks
	source := object.get(input, ["context", "source_address"], null)
	not source_allowed(source)
}

source_allowed(source) if {
	is_string(source)
	count(net.cidr_contains_matches(service.source_networks, source)) > 0
}

deny contains sprintf("outside the hours of %s", [service_name]) if {
	user_grant
	service.time_window
	not in_window(service.time_window)
}

in_window(w) if {
	ns := input.context.now_s * 1000000000
	tz := object.get(w, "timezone", "UTC")
	time.weekday([ns, tz]) in object.get(w, "days", ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
	[hour, _, _] := time.clock([ns, tz])
	hour >= w.start_hour
	hour < w.end_hour
}

# Compliance findings deny unless Umbra runs compliance in report-only mode.
deny contains sprintf("%s (%s)", [message, service.compliance]) if {
	user_grant
	not input.device.report_only
	some message in compliance_findings(service.compliance)
}

compliance_findings(level) := [f.message | some f in input.device.compliance[level].blocking] if {
	input.device.compliance[level]
} else := ["the device's compliance is unknown"]

deny contains sprintf("risk %d allows only low-sensitivity services", [risk]) if {
	risk >= bands.restricted
	risk < bands.deny
	sensitivity != "low"
}

# The request's (from Umbra's service configuration), else the data's.
sensitivity := req.sensitivity if {
	is_string(req.sensitivity)
} else := object.get(service, "sensitivity", "unclassified")

# --- conditions ---------------------------------------------------------------

mfa_stale(_) if mfa_age == null

mfa_stale(window) if mfa_age > window

conditions contains "step_up_mfa" if {
	risk >= bands.step_up
	mfa_stale(step_up_window)
}

conditions contains "step_up_mfa" if {
	user_grant
	mfa_stale(service.max_mfa_age_seconds)
}

conditions contains "device_reverification" if risk >= bands.reverify

conditions contains "detailed_audit" if risk >= bands.reverify

conditions contains "session_recording" if risk >= bands.restricted

# --- the answer ---------------------------------------------------------------

default allowed := false

allowed if {
	count(grants) > 0
	count(deny) == 0
	not "step_up_mfa" in conditions
}

final_conditions := sort(conditions) if {
	count(deny) == 0
} else := []

final_reasons := sort(deny) if {
	count(deny) > 0
} else := sort(grants)

decision := {"allow": allowed, "conditions": final_conditions, "reasons": final_reasons}
