// Package helm tests Tandem's Helm chart (deploy/helm/tandem) offline: it
// renders the chart with Helm's own library (the chart loader, the template
// engine and the manifest sorter that splits hooks from resources, as `helm
// install` does), with the default values and with every option on, and
// decodes every rendered object strictly into the Kubernetes API types of
// client-go (a wrong type or an unknown field fails). The custom resources
// of KEDA and the Prometheus Operator, which client-go does not know, are
// decoded strictly into small local types. It then checks the invariants
// the chart promises: every container has a liveness and a readiness probe,
// resource limits and the hardened securityContext; the migration Job is a
// pre-install/pre-upgrade hook and the pods start with -migrate=false;
// selectors find their pods; no secret reaches a ConfigMap; the Stripe rate
// limit is divided among the worker pods.
//
// The package has no code of its own: only its test, kept apart so that
// Helm's and client-go's dependencies stay out of every binary.
package helm
