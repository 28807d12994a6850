package helm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// chartDir is deploy/helm/tandem.
func chartDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "tandem")
}

// kubeVersion is the cluster the chart is rendered for: the oldest its
// Chart.yaml accepts (the preStop sleep action needs 1.30).
const kubeVersion = "v1.30.0"

// rendered is one release of the chart as Helm would install it.
type rendered struct {
	hooks   []*release.Hook
	objects []object // every resource and hook, decoded
	notes   string

	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
	secrets      []*corev1.Secret
	jobs         []*batchv1.Job
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	ingresses    []*networkingv1.Ingress
	scaledObjs   []*scaledObject
	triggerAuths []*triggerAuthentication
	monitors     []*serviceMonitor
}

// object is one rendered manifest.
type object struct {
	kind, name, source string
	value              any
}

// render renders the chart with values over its defaults (as `helm install
// -f`), splits hooks from resources with Helm's sorter, and decodes every
// manifest strictly.
func render(t *testing.T, values map[string]any) *rendered {
	t.Helper()
	r, err := tryRender(t, values)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tryRender(t *testing.T, values map[string]any) (*rendered, error) {
	t.Helper()
	ch, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	if err := ch.Validate(); err != nil {
		t.Fatalf("the chart's metadata: %v", err)
	}
	if !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, kubeVersion) {
		t.Fatalf("Chart.yaml kubeVersion %q refuses %s", ch.Metadata.KubeVersion, kubeVersion)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: kubeVersion, Major: "1", Minor: "30"}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{
		Name: "prod", Namespace: "tandem", Revision: 1, IsInstall: true}, caps)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	r := &rendered{}
	for name, text := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			r.notes = text
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		t.Fatalf("sorting the manifests as helm install does: %v", err)
	}
	r.hooks = hooks
	for _, m := range manifests {
		r.decode(t, m.Name, m.Content)
	}
	for _, h := range hooks {
		r.decode(t, h.Path, h.Manifest)
	}
	return r, nil
}

// codecs decode strictly: an unknown field, a duplicate field or a wrong
// type is an error.
var codecs = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)

// decode decodes one manifest into its Kubernetes type (client-go's scheme)
// or, for the custom resources, into the local types below, strictly.
func (r *rendered) decode(t *testing.T, source, content string) {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(content), &head); err != nil {
		t.Fatalf("%s: not YAML: %v\n%s", source, err, content)
	}
	where := fmt.Sprintf("%s (%s %s %s)", source, head.APIVersion, head.Kind, head.Metadata.Name)
	var value any
	switch head.APIVersion {
	case "keda.sh/v1alpha1", "monitoring.coreos.com/v1":
		var err error
		switch head.Kind {
		case "ScaledObject":
			var v scaledObject
			err = strictCRD(content, &v)
			r.scaledObjs, value = append(r.scaledObjs, &v), &v
		case "TriggerAuthentication":
			var v triggerAuthentication
			err = strictCRD(content, &v)
			r.triggerAuths, value = append(r.triggerAuths, &v), &v
		case "ServiceMonitor":
			var v serviceMonitor
			err = strictCRD(content, &v)
			r.monitors, value = append(r.monitors, &v), &v
		default:
			t.Fatalf("%s: a custom resource this test does not know", where)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", where, err, content)
		}
	default:
		obj, _, err := codecs.UniversalDeserializer().Decode([]byte(content), nil, nil)
		if err != nil {
			t.Fatalf("%s: strict decoding into the Kubernetes API types: %v\n%s", where, err, content)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *corev1.ConfigMap:
			r.configMaps = append(r.configMaps, o)
		case *corev1.Secret:
			r.secrets = append(r.secrets, o)
		case *batchv1.Job:
			r.jobs = append(r.jobs, o)
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, o)
		case *networkingv1.Ingress:
			r.ingresses = append(r.ingresses, o)
		default:
			t.Fatalf("%s: a kind this test does not check (%T)", where, obj)
		}
		value = obj
	}
	if head.Metadata.Name == "" {
		t.Errorf("%s: no metadata.name", where)
	}
	r.objects = append(r.objects, object{kind: head.Kind, name: head.Metadata.Name, source: source, value: value})
}

// strictCRD decodes a custom resource's YAML into v, refusing unknown
// fields.
func strictCRD(content string, v any) error {
	j, err := yaml.YAMLToJSON([]byte(content))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// meta is the part of a custom resource's metadata the chart sets.
type meta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// scaledObject is KEDA's keda.sh/v1alpha1 ScaledObject, the fields the
// chart may set (https://keda.sh/docs/2.16/reference/scaledobject-spec/).
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// triggerAuthentication is KEDA's keda.sh/v1alpha1 TriggerAuthentication
// with secretTargetRef.
type triggerAuthentication struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
	Spec       struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// serviceMonitor is the Prometheus Operator's monitoring.coreos.com/v1
// ServiceMonitor, the fields the chart may set.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
	Spec       struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// Secret values of the every-option-on release: distinctive, so that any
// copy of one outside the Secret is found.
var secretValues = map[string]string{
	"TANDEM_MYSQL_DSN":          "tandem:dsn-pass-7f3a@tcp(mysql:3306)/tandem?parseTime=true",
	"TANDEM_AMQP_URL":           "amqp://tandem:amqp-pass-91bc@rabbitmq:5672/tandem",
	"TANDEM_API_TOKENS":         "api-token-5d1e0c2b9a8f7e6d",
	"STRIPE_SECRET_KEY":         "sk_live_secret-4c2d",
	"STRIPE_WEBHOOK_SECRET":     "whsec_secret-8e1f",
	"SALESFORCE_CLIENT_ID":      "sf-client-id-2b7c",
	"SALESFORCE_CLIENT_SECRET":  "sf-client-secret-6a0d",
	"SALESFORCE_WEBHOOK_SECRET": "sf-webhook-secret-3f9e",
}

// everything turns every option of the chart on.
func everything() map[string]any {
	sv := map[string]any{}
	for k, v := range secretValues {
		sv[k] = v
	}
	keda := map[string]any{"enabled": true, "minReplicaCount": 1, "maxReplicaCount": 3, "queueLength": 250}
	return map[string]any{
		"image":            map[string]any{"repository": "registry.example.com/tandem", "tag": "1.2.3"},
		"imagePullSecrets": []any{map[string]any{"name": "registry"}},
		"config": map[string]any{
			"TANDEM_LOG_LEVEL": "debug", "TANDEM_INBOUND_CREATE": false, "TANDEM_WORKER_CONCURRENCY": 16,
			"SALESFORCE_ORG_ID": "00D000000000001", "SALESFORCE_INTEGRATION_USER_ID": "005000000000001",
		},
		"configFile": "relay_batch_size: 100\n",
		"secrets":    map[string]any{"values": sv},
		"migrations": map[string]any{"allowCopy": true},
		"api": map[string]any{"extraArgs": []any{"-migrate-allow-copy=false"},
			"podAnnotations": map[string]any{"team": "growth"}, "nodeSelector": map[string]any{"pool": "apps"},
			"tolerations": []any{map[string]any{"key": "apps", "operator": "Exists", "effect": "NoSchedule"}},
			"affinity": map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
				"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{
					map[string]any{"key": "pool", "operator": "In", "values": []any{"apps"}}}}}}}}},
		"webhook": map[string]any{
			"autoscaling": map[string]any{"enabled": true},
			"ingress": map[string]any{"enabled": true, "className": "nginx", "host": "hooks.example.com",
				"annotations": map[string]any{"cert-manager.io/cluster-issuer": "letsencrypt"}},
		},
		"workers": map[string]any{
			"stripe": map[string]any{"keda": keda, "env": map[string]any{"STRIPE_API_BASE": "https://api.stripe.com"}},
			"salesforce": map[string]any{"enabled": true, "replicas": 2, "keda": keda, "env": map[string]any{
				"SALESFORCE_INSTANCE_URL": "https://example.my.salesforce.com",
				"SALESFORCE_TOKEN_URL":    "https://example.my.salesforce.com/services/oauth2/token",
			}},
		},
		"metrics":        map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}}},
		"serviceAccount": map[string]any{"name": "tandem"},
	}
}

func TestChartRendersValidObjects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		values  map[string]any
		workers []string // the worker Deployments' providers
		kinds   map[string]int
	}{
		{"defaults", nil, []string{"stripe"}, map[string]int{
			"Deployment": 3, "Service": 3, "ConfigMap": 1, "Secret": 2, "Job": 1,
			"PodDisruptionBudget": 2, "HorizontalPodAutoscaler": 1}},
		{"every option on", everything(), []string{"salesforce", "stripe"}, map[string]int{
			"Deployment": 4, "Service": 4, "ConfigMap": 2, "Secret": 2, "Job": 1, "PodDisruptionBudget": 2,
			"HorizontalPodAutoscaler": 2, "Ingress": 1, "ScaledObject": 2, "TriggerAuthentication": 1, "ServiceMonitor": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, tc.values)
			kinds := map[string]int{}
			for _, o := range r.objects {
				kinds[o.kind]++
			}
			if !maps.Equal(kinds, tc.kinds) {
				t.Errorf("rendered %v, want %v", kinds, tc.kinds)
			}
			checkContainers(t, r)
			checkMigration(t, r)
			checkSelectors(t, r)
			checkNoSecretInConfigMaps(t, r)
			checkWorkers(t, r, tc.workers)
			checkCustomResources(t, r)
			if !strings.Contains(r.notes, "prod-tandem-migrate") {
				t.Errorf("NOTES.txt does not name the migration job:\n%s", r.notes)
			}
		})
	}
}

// checkContainers: every container of every Deployment has its probes
// (liveness /healthz, readiness /readyz on its port), requests and limits
// of CPU and memory, and the hardened securityContext; the Job's too, less
// the probes.
func checkContainers(t *testing.T, r *rendered) {
	t.Helper()
	type podOf struct {
		owner string
		spec  corev1.PodSpec
		probe bool
	}
	var pods []podOf
	for _, d := range r.deployments {
		pods = append(pods, podOf{"Deployment " + d.Name, d.Spec.Template.Spec, true})
	}
	for _, j := range r.jobs {
		pods = append(pods, podOf{"Job " + j.Name, j.Spec.Template.Spec, false})
	}
	for _, p := range pods {
		ps := p.spec.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
			t.Errorf("%s: the pod must run as a non-root numeric user: %+v", p.owner, ps)
		}
		if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a service account token it does not need", p.owner)
		}
		if len(p.spec.Containers) == 0 {
			t.Errorf("%s: no container", p.owner)
		}
		for _, c := range p.spec.Containers {
			where := p.owner + " container " + c.Name
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Limits[res]; !ok || q.IsZero() {
					t.Errorf("%s: no %s limit", where, res)
				}
				if q, ok := c.Resources.Requests[res]; !ok || q.IsZero() {
					t.Errorf("%s: no %s request", where, res)
				} else if lim := c.Resources.Limits[res]; lim.Cmp(q) < 0 {
					t.Errorf("%s: %s request above its limit", where, res)
				}
			}
			sc := c.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: securityContext %+v, want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, drop ALL", where, sc)
			}
			if !p.probe {
				continue
			}
			if len(c.Ports) != 1 || c.Ports[0].Name != "http" {
				t.Errorf("%s: ports %+v, want one named http", where, c.Ports)
			}
			for _, pr := range []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
				if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || pr.probe.HTTPGet.Port.String() != "http" {
					t.Errorf("%s: %s probe %+v, want GET %s on port http", where, pr.name, pr.probe, pr.path)
				}
			}
			if p.spec.TerminationGracePeriodSeconds == nil || *p.spec.TerminationGracePeriodSeconds <= 25 {
				t.Errorf("%s: the grace period must outlast the 20 s shutdown and the preStop sleep", where)
			}
		}
	}
}

// checkMigration: the migration Job is a pre-install and pre-upgrade hook
// (so Helm runs it, and waits for it, before any pod of the release), runs
// `api -migrate-only` with the DSN from a Secret that exists by then, and
// every pod of a command that migrates by default starts with
// -migrate=false.
func checkMigration(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.jobs) != 1 {
		t.Fatalf("%d Jobs, want the migration's", len(r.jobs))
	}
	job := r.jobs[0]
	var hook *release.Hook
	for _, h := range r.hooks {
		if h.Kind == "Job" && h.Name == job.Name {
			hook = h
		}
	}
	if hook == nil {
		t.Fatalf("Job %s is not a hook: helm install would create it with the pods", job.Name)
	}
	if !slices.Contains(hook.Events, release.HookPreInstall) || !slices.Contains(hook.Events, release.HookPreUpgrade) {
		t.Errorf("Job %s runs on %v, want pre-install and pre-upgrade", job.Name, hook.Events)
	}
	c := job.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Command, []string{"api"}) || !slices.Contains(c.Args, "-migrate-only") {
		t.Errorf("Job %s runs %v %v, want api -migrate-only", job.Name, c.Command, c.Args)
	}
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("Job %s: restartPolicy %q", job.Name, job.Spec.Template.Spec.RestartPolicy)
	}
	// The DSN comes from a Secret that exists when the hook runs: one made
	// as an earlier hook (weight below the Job's), or one the user manages.
	var ref *corev1.SecretKeySelector
	for _, e := range c.Env {
		if e.Name == "TANDEM_MYSQL_DSN" && e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
	}
	if ref == nil {
		t.Fatalf("Job %s: TANDEM_MYSQL_DSN is not read from a Secret", job.Name)
	}
	secretIsHook := false
	for _, h := range r.hooks {
		if h.Kind == "Secret" && h.Name == ref.Name {
			secretIsHook = h.Weight < hook.Weight && slices.Equal(h.Events, hook.Events)
			if !secretIsHook {
				t.Errorf("the Job's Secret %s runs as a hook after the Job or on other events (%v, weight %d)", h.Name, h.Events, h.Weight)
			}
		}
	}
	if !secretIsHook && ref.Name != "managed-secret" {
		t.Errorf("Job %s reads Secret %s, which is neither an earlier hook nor the existing Secret", job.Name, ref.Name)
	}

	for _, d := range r.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		switch cmd := strings.Join(c.Command, " "); cmd {
		case "api", "worker":
			if !slices.Contains(c.Args, "-migrate=false") {
				t.Errorf("Deployment %s runs %s %v: without -migrate=false it migrates at start", d.Name, cmd, c.Args)
			}
		case "webhook":
			if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "-migrate") }) {
				t.Errorf("Deployment %s: the webhook has no -migrate flag: %v", d.Name, c.Args)
			}
		default:
			t.Errorf("Deployment %s runs %q, not a Tandem command", d.Name, cmd)
		}
	}
	for _, h := range r.hooks {
		if h.Kind != "Job" && h.Kind != "Secret" {
			t.Errorf("unexpected hook %s %s", h.Kind, h.Name)
		}
	}
}

// checkSelectors: each Deployment selects its own pods, each Service,
// PodDisruptionBudget and autoscaler finds exactly one Deployment, and every
// pod reads the ConfigMap and the Secret.
func checkSelectors(t *testing.T, r *rendered) {
	t.Helper()
	matching := func(sel map[string]string) []string {
		var names []string
		for _, d := range r.deployments {
			if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels)) {
				names = append(names, d.Name)
			}
		}
		return names
	}
	for _, d := range r.deployments {
		if got := matching(d.Spec.Selector.MatchLabels); !slices.Equal(got, []string{d.Name}) {
			t.Errorf("Deployment %s's selector matches the pods of %v", d.Name, got)
		}
		for _, ef := range d.Spec.Template.Spec.Containers[0].EnvFrom {
			switch {
			case ef.ConfigMapRef != nil && !r.hasConfigMap(ef.ConfigMapRef.Name):
				t.Errorf("Deployment %s reads ConfigMap %s, which is not rendered", d.Name, ef.ConfigMapRef.Name)
			case ef.SecretRef != nil && !r.hasSecret(ef.SecretRef.Name) && ef.SecretRef.Name != "managed-secret":
				t.Errorf("Deployment %s reads Secret %s, which is not rendered", d.Name, ef.SecretRef.Name)
			}
		}
		if len(d.Spec.Template.Spec.Containers[0].EnvFrom) != 2 {
			t.Errorf("Deployment %s: envFrom %+v, want the ConfigMap and the Secret", d.Name, d.Spec.Template.Spec.Containers[0].EnvFrom)
		}
	}
	for _, s := range r.services {
		if got := matching(s.Spec.Selector); len(got) != 1 {
			t.Errorf("Service %s selects the pods of %v, want one Deployment", s.Name, got)
		}
	}
	for _, p := range r.pdbs {
		if got := matching(p.Spec.Selector.MatchLabels); len(got) != 1 {
			t.Errorf("PodDisruptionBudget %s selects %v", p.Name, got)
		}
	}
	for _, h := range r.hpas {
		d := r.deployment(h.Spec.ScaleTargetRef.Name)
		if d == nil || h.Spec.ScaleTargetRef.Kind != "Deployment" {
			t.Errorf("HorizontalPodAutoscaler %s scales %+v, not a rendered Deployment", h.Name, h.Spec.ScaleTargetRef)
		} else if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas under an autoscaler: every upgrade would reset them", d.Name)
		}
	}
	for _, ing := range r.ingresses {
		if len(ing.Spec.TLS) == 0 || len(ing.Spec.Rules) == 0 || !slices.Contains(ing.Spec.TLS[0].Hosts, ing.Spec.Rules[0].Host) {
			t.Errorf("Ingress %s: the webhook must be served over TLS for its host: %+v", ing.Name, ing.Spec)
			continue
		}
		for _, p := range ing.Spec.Rules[0].HTTP.Paths {
			if p.Path != "/webhook/" {
				t.Errorf("Ingress %s exposes %s; only /webhook/ belongs outside", ing.Name, p.Path)
			}
			if svc := p.Backend.Service; svc == nil || !strings.HasSuffix(svc.Name, "-webhook") || !r.hasService(svc.Name) {
				t.Errorf("Ingress %s routes to %+v, not the webhook Service", ing.Name, p.Backend)
			}
		}
	}
}

// checkNoSecretInConfigMaps: no ConfigMap holds a secret's name or value;
// the Secret holds every value set.
func checkNoSecretInConfigMaps(t *testing.T, r *rendered) {
	t.Helper()
	for _, cm := range r.configMaps {
		for k, v := range cm.Data {
			for name, secret := range secretValues {
				if k == name {
					t.Errorf("ConfigMap %s holds %s", cm.Name, name)
				}
				if strings.Contains(v, secret) {
					t.Errorf("ConfigMap %s key %s holds the value of %s", cm.Name, k, name)
				}
			}
		}
	}
	// Nor does any other object but the Secrets.
	for _, o := range r.objects {
		if o.kind == "Secret" {
			continue
		}
		b, err := json.Marshal(o.value)
		if err != nil {
			t.Fatal(err)
		}
		for name, secret := range secretValues {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s %s holds the value of %s", o.kind, o.name, name)
			}
		}
	}
}

// checkWorkers: one worker Deployment per enabled provider, each running
// `worker -provider <name>`; TANDEM_PROVIDERS names them all; the Stripe
// workers' per-pod rate limit times the most pods that can run stays within
// the account's.
func checkWorkers(t *testing.T, r *rendered, want []string) {
	t.Helper()
	var providers []string
	for _, d := range r.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		if c.Command[0] != "worker" {
			continue
		}
		i := slices.Index(c.Args, "-provider")
		if i < 0 || i+1 >= len(c.Args) {
			t.Errorf("Deployment %s runs a worker without -provider: %v", d.Name, c.Args)
			continue
		}
		p := c.Args[i+1]
		providers = append(providers, p)
		if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxSurge == nil || d.Spec.Strategy.RollingUpdate.MaxSurge.IntValue() != 0 {
			t.Errorf("Deployment %s: a rollout may add pods beyond those the rate limit is divided among", d.Name)
		}
		if p != "stripe" {
			continue
		}
		var perPod float64
		for _, e := range c.Env {
			if e.Name == "STRIPE_RATE_LIMIT" {
				v, err := strconv.ParseFloat(e.Value, 64)
				if err != nil {
					t.Errorf("Deployment %s: STRIPE_RATE_LIMIT %q: %v", d.Name, e.Value, err)
				}
				perPod = v
			}
		}
		maxPods := 0
		if d.Spec.Replicas != nil {
			maxPods = int(*d.Spec.Replicas)
		}
		for _, so := range r.scaledObjs {
			if so.Spec.ScaleTargetRef.Name == d.Name {
				maxPods = int(*so.Spec.MaxReplicaCount)
			}
		}
		const perAccount = 25 // values.yaml's workers.stripe.rateLimit.perAccount
		if perPod <= 0 || perPod*float64(maxPods) > perAccount || perPod*float64(maxPods) < perAccount-0.01*float64(maxPods) {
			t.Errorf("Deployment %s: STRIPE_RATE_LIMIT %v × up to %d pods, want the account's %d divided among them", d.Name, perPod, maxPods, perAccount)
		}
		if got := d.Annotations["tandem.rate-limit-divided-among"]; got != strconv.Itoa(maxPods) {
			t.Errorf("Deployment %s: annotation says the limit is divided among %s pods, want %d", d.Name, got, maxPods)
		}
	}
	slices.Sort(providers)
	if !slices.Equal(providers, want) {
		t.Errorf("worker Deployments for %v, want %v", providers, want)
	}
	for _, cm := range r.configMaps {
		if v, ok := cm.Data["TANDEM_PROVIDERS"]; ok && v != strings.Join(want, ",") {
			t.Errorf("ConfigMap %s: TANDEM_PROVIDERS=%q, want %q", cm.Name, v, strings.Join(want, ","))
		}
	}
}

// checkCustomResources: each ScaledObject scales a worker Deployment on its
// provider's queue with the TriggerAuthentication that reads the AMQP URL
// from the Secret; the ServiceMonitor finds every Service's http port.
func checkCustomResources(t *testing.T, r *rendered) {
	t.Helper()
	for _, so := range r.scaledObjs {
		d := r.deployment(so.Spec.ScaleTargetRef.Name)
		if d == nil {
			t.Errorf("ScaledObject %s scales %q, not a rendered Deployment", so.Metadata.Name, so.Spec.ScaleTargetRef.Name)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("Deployment %s sets replicas under KEDA", d.Name)
		}
		args := d.Spec.Template.Spec.Containers[0].Args
		provider := args[slices.Index(args, "-provider")+1]
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "rabbitmq" ||
			so.Spec.Triggers[0].Metadata["queueName"] != "tandem.sync."+provider || so.Spec.Triggers[0].AuthenticationRef == nil {
			t.Errorf("ScaledObject %s: triggers %+v, want rabbitmq on tandem.sync.%s", so.Metadata.Name, so.Spec.Triggers, provider)
			continue
		}
		found := false
		for _, ta := range r.triggerAuths {
			if ta.Metadata.Name == so.Spec.Triggers[0].AuthenticationRef.Name {
				found = len(ta.Spec.SecretTargetRef) == 1 && ta.Spec.SecretTargetRef[0].Key == "TANDEM_AMQP_URL" &&
					ta.Spec.SecretTargetRef[0].Parameter == "host"
			}
		}
		if !found {
			t.Errorf("ScaledObject %s: no TriggerAuthentication giving host from TANDEM_AMQP_URL", so.Metadata.Name)
		}
		if *so.Spec.MinReplicaCount > *so.Spec.MaxReplicaCount {
			t.Errorf("ScaledObject %s: min above max", so.Metadata.Name)
		}
	}
	for _, m := range r.monitors {
		for _, s := range r.services {
			if !labels.SelectorFromSet(m.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) {
				t.Errorf("ServiceMonitor %s misses Service %s", m.Metadata.Name, s.Name)
			}
			if s.Spec.Ports[0].Name != m.Spec.Endpoints[0].Port {
				t.Errorf("Service %s has no port %q", s.Name, m.Spec.Endpoints[0].Port)
			}
		}
	}
}

func (r *rendered) deployment(name string) *appsv1.Deployment {
	for _, d := range r.deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (r *rendered) hasConfigMap(name string) bool {
	return slices.ContainsFunc(r.configMaps, func(c *corev1.ConfigMap) bool { return c.Name == name })
}

func (r *rendered) hasSecret(name string) bool {
	return slices.ContainsFunc(r.secrets, func(s *corev1.Secret) bool { return s.Name == name })
}

func (r *rendered) hasService(name string) bool {
	return slices.ContainsFunc(r.services, func(s *corev1.Service) bool { return s.Name == name })
}

// TestChartUsesAnExistingSecret: with secrets.existingSecret the chart makes
// no Secret; the pods, the migration Job and KEDA read the one named.
func TestChartUsesAnExistingSecret(t *testing.T) {
	t.Parallel()
	v := everything()
	v["secrets"] = map[string]any{"existingSecret": "managed-secret"}
	r := render(t, v)
	if len(r.secrets) != 0 {
		t.Errorf("rendered %d Secrets with an existing one", len(r.secrets))
	}
	checkMigration(t, r)
	checkSelectors(t, r)
	for _, d := range r.deployments {
		if d.Spec.Template.Annotations["checksum/secret"] != "" {
			t.Errorf("Deployment %s hashes a Secret the chart does not render", d.Name)
		}
	}
	for _, ta := range r.triggerAuths {
		if ta.Spec.SecretTargetRef[0].Name != "managed-secret" {
			t.Errorf("TriggerAuthentication reads %s", ta.Spec.SecretTargetRef[0].Name)
		}
	}
}

// TestChartRefusesMistakes: values that would leak a secret into a
// ConfigMap, or that the chart sets itself, are refused with the reason.
func TestChartRefusesMistakes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   string
	}{
		{"a secret in config", map[string]any{"config": map[string]any{"STRIPE_SECRET_KEY": "sk_live_x"}}, "config.STRIPE_SECRET_KEY: a secret"},
		{"the DSN in config", map[string]any{"config": map[string]any{"TANDEM_MYSQL_DSN": "u:p@tcp(db)/t"}}, "config.TANDEM_MYSQL_DSN: a secret"},
		{"a token in a worker's env", map[string]any{"workers": map[string]any{"stripe": map[string]any{"env": map[string]any{"TANDEM_API_TOKENS": "x"}}}}, "a secret belongs"},
		{"providers set by hand", map[string]any{"config": map[string]any{"TANDEM_PROVIDERS": "stripe"}}, "the chart sets it"},
		{"no provider", map[string]any{"workers": map[string]any{"stripe": map[string]any{"enabled": false}}}, "enable at least one provider"},
		{"a bad provider name", map[string]any{"workers": map[string]any{"Stri pe": map[string]any{"enabled": true}}}, "lower-case letters and digits"},
		{"a rate set twice", map[string]any{"workers": map[string]any{"stripe": map[string]any{"env": map[string]any{"STRIPE_RATE_LIMIT": "5"}}}}, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryRender(t, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("rendering: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
