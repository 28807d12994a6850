// Package container tests Tandem's container image (deploy/Dockerfile, built
// by scripts/image.sh) on this machine: it starts a Docker daemon of its own
// (dockerd from Debian's docker.io, with its data in a temporary directory
// and its own socket), builds the image, runs the migration, the api, the
// webhook and a Stripe worker as containers on the host network against the
// real MariaDB and RabbitMQ (a database and a vhost of the test's own) and
// the local Stripe sandbox served by the test process, and checks that a
// user created through the REST API reaches the sandbox and a dashboard edit
// comes back to the user.
//
// The containers run as the Helm chart runs them (deploy/helm/tandem): a
// numeric non-root user, a read-only root filesystem, every capability
// dropped, no privilege escalation, the pods with -migrate=false after a
// separate migration run.
//
// The sandbox is not in the production image (it is a test tool); the test
// serves it from its own process, as the e2e tests do, and the containers
// reach it over the host network.
//
// BenchmarkImage measures what sizes the chart's requests and limits: the
// image size, each process's cold start to ready in a container, and each
// container's resident memory after a burst of creates and dashboard edits
// (`make bench-image`).
//
// Docker needs root. If the daemon cannot start, the test fails saying why;
// it does not skip.
package container
