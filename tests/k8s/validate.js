#!/usr/bin/env node
// Strict Kubernetes API schema validation of the manifests in deploy/kubernetes/, of the test
// fixtures, and of what `ebb inject` makes of them (make test).
// kubernetes-models' validate() checks types and required fields but lets unknown fields through,
// and a misspelled field (`periodSecond: 1`) is silently dropped by the API server. So this also
// rejects every field the schema does not read, and proves it on fixtures that must fail.
//
//   node validate.js            deploy/kubernetes/*.yaml (which must also fit a `restricted` Pod
//                               Security namespace), the realistic fixtures (shop/, kubectl/,
//                               inject/) and `$EBB_BIN inject` of inject/ and deploy/examples/
//                               must pass, tests/k8s/fixtures/schema/* must fail with the error
//                               their "# expect:" line names
//   node validate.js FILE...    validate these files only (`-` reads stdin: `ebb inject | node validate.js -`)
'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const YAML = require('yaml');

const ROOT = path.resolve(__dirname, '..', '..');
const DEPLOY_DIR = path.join(ROOT, 'deploy', 'kubernetes');
const BAD_DIR = path.join(__dirname, 'fixtures', 'schema');
const FIXTURE_DIRS = ['shop', 'kubectl', 'inject'].map((d) => path.join(__dirname, 'fixtures', d));
const INJECT_DIR = path.join(__dirname, 'fixtures', 'inject');

// Custom resources with a model package of their own (ES modules, loaded once by loadCrdModels).
const CRD_PACKAGES = {
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};
const crdModels = {};

async function loadCrdModels() {
  for (const [apiVersion, pkg] of Object.entries(CRD_PACKAGES)) {
    crdModels[apiVersion] = await import(pkg);
  }
}

// The model class for an apiVersion/kind, e.g. apps/v1 Deployment -> kubernetes-models/apps/v1.
function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return null;
  if (crdModels[apiVersion]) {
    const cls = crdModels[apiVersion][kind];
    return cls && cls.prototype && typeof cls.prototype.validate === 'function' ? cls : null;
  }
  let group;
  try {
    group = require('kubernetes-models/' + apiVersion);
  } catch (e) {
    return null;
  }
  const cls = group[kind];
  return cls && cls.prototype && typeof cls.prototype.validate === 'function' ? cls : null;
}

// The validators that kubernetes-models ships are compiled JSON schema: each reads exactly the
// properties its schema declares (`data.periodSeconds`), and enumerates the keys only of objects
// that are maps (labels, ConfigMap data). Running it on proxies that record those reads tells,
// for every object in the manifest, which of its keys the schema knows. What no proxy saw read is
// a field the schema does not have. (An opaque object, e.g. x-kubernetes-preserve-unknown-fields,
// would have its fields reported too; none of the kinds in deploy/ has one.)
function tracked(root) {
  const records = new Map();  // raw object -> {keys: Set, enumerated: bool}
  const proxies = new Map();
  function wrap(value) {
    if (value === null || typeof value !== 'object') return value;
    if (proxies.has(value)) return proxies.get(value);
    const rec = { keys: new Set(), enumerated: false };
    records.set(value, rec);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        if (typeof key === 'string') rec.keys.add(key);
        return wrap(Reflect.get(target, key, receiver));
      },
      has(target, key) {
        if (typeof key === 'string') rec.keys.add(key);
        return Reflect.has(target, key);
      },
      getOwnPropertyDescriptor(target, key) {
        if (typeof key === 'string') rec.keys.add(key);
        return Reflect.getOwnPropertyDescriptor(target, key);
      },
      ownKeys(target) {
        rec.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  }
  return { proxy: wrap(root), records };
}

function unknownFields(value, records, where, out) {
  if (value === null || typeof value !== 'object') return;
  const rec = records.get(value);
  if (!rec) return;  // under a field already reported, or never reached because of a type error
  if (Array.isArray(value)) {
    value.forEach((item, i) => unknownFields(item, records, where + '[' + i + ']', out));
    return;
  }
  for (const key of Object.keys(value)) {
    const at = where ? where + '.' + key : key;
    if (key === 'fieldsV1') continue;  // managedFields' field sets: opaque by design
    if (!rec.enumerated && !rec.keys.has(key)) {
      out.push('unknown field ' + at);
      continue;
    }
    unknownFields(value[key], records, at, out);
  }
}

// Every problem in one document, as strings; empty when the document is valid.
function validateObject(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return ['not an object'];
  if (obj.kind === 'List' && Array.isArray(obj.items)) {
    const out = [];
    obj.items.forEach((item, i) => validateObject(item).forEach((p) => out.push('items[' + i + ']: ' + p)));
    return out;
  }
  // No schema package matches kubernetes-models 4 for Argo Rollouts: its pod template, the part
  // ebb inject writes, is checked strictly as the core PodTemplate it is.
  if (obj.apiVersion === 'argoproj.io/v1alpha1' && obj.kind === 'Rollout') {
    const tmpl = obj.spec && obj.spec.template;
    if (!tmpl) return ['Rollout without spec.template'];
    return validateObject({ apiVersion: 'v1', kind: 'PodTemplate', metadata: { name: 'rollout' }, template: tmpl })
      .map((p) => p.replace('unknown field template.', 'unknown field spec.template.'));
  }
  const cls = modelFor(obj.apiVersion, obj.kind);
  if (!cls) return ['unknown apiVersion/kind ' + obj.apiVersion + ' ' + obj.kind];
  const problems = [];
  const { proxy, records } = tracked(obj);
  try {
    cls.prototype.validate.call(proxy);
  } catch (e) {
    problems.push('schema: ' + (e && e.message ? e.message : String(e)));
  }
  unknownFields(obj, records, '', problems);
  return problems;
}

// The `restricted` Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-
// standards), the parts a pod template can break: every container, init containers included,
// runs as non-root with RuntimeDefault (or Localhost) seccomp, no privilege escalation, all
// capabilities dropped (NET_BIND_SERVICE may come back), not privileged, no host namespaces.
function restrictedProblems(obj) {
  const podSpec = obj.kind === 'Pod' ? obj.spec : obj.spec && obj.spec.template && obj.spec.template.spec;
  if (!podSpec) return [];
  const out = [];
  const pod = podSpec.securityContext || {};
  for (const key of ['hostNetwork', 'hostPID', 'hostIPC']) {
    if (podSpec[key]) out.push('not restricted: ' + key);
  }
  const lists = [['containers', podSpec.containers || []], ['initContainers', podSpec.initContainers || []]];
  for (const [list, containers] of lists) {
    containers.forEach((c, i) => {
      const at = 'not restricted: ' + list + '[' + i + '] (' + c.name + ') ';
      const sc = c.securityContext || {};
      if (sc.allowPrivilegeEscalation !== false) out.push(at + 'allowPrivilegeEscalation is not false');
      if (sc.privileged) out.push(at + 'privileged');
      const drop = (sc.capabilities && sc.capabilities.drop) || [];
      if (!drop.includes('ALL')) out.push(at + 'capabilities.drop lacks ALL');
      const add = (sc.capabilities && sc.capabilities.add) || [];
      if (add.some((a) => a !== 'NET_BIND_SERVICE')) out.push(at + 'adds capabilities');
      const nonRoot = sc.runAsNonRoot !== undefined ? sc.runAsNonRoot : pod.runAsNonRoot;
      if (nonRoot !== true) out.push(at + 'runAsNonRoot is not true');
      if (sc.runAsUser === 0 || (sc.runAsUser === undefined && pod.runAsUser === 0)) out.push(at + 'runs as user 0');
      const seccomp = (sc.seccompProfile || pod.seccompProfile || {}).type;
      if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') out.push(at + 'seccompProfile is not RuntimeDefault');
    });
  }
  return out;
}

// {docs, problems}: problems prefixed with the document's place and name. With `restricted`,
// pod templates must also fit a `restricted` Pod Security namespace.
function validateFile(file, restricted) {
  let text;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    return { docs: 0, problems: ['cannot read: ' + e.message] };
  }
  return validateText(text, restricted);
}

function validateText(text, restricted) {
  const problems = [];
  let docs = [];
  try {
    docs = YAML.parseAllDocuments(text, { uniqueKeys: true, merge: true });  // `<<:` as kubectl
  } catch (e) {
    return { docs: 0, problems: ['cannot parse: ' + e.message] };
  }
  let count = 0;
  docs.forEach((doc, i) => {
    if (doc.errors && doc.errors.length) {
      doc.errors.forEach((err) => problems.push('document ' + (i + 1) + ': YAML: ' + err.message));
      return;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) return;  // an empty document between `---`s
    count += 1;
    const name = (obj.kind || '?') + '/' + ((obj.metadata && obj.metadata.name) || '?');
    const found = validateObject(obj).concat(restricted ? restrictedProblems(obj) : []);
    found.forEach((p) => problems.push('document ' + (i + 1) + ' ' + name + ': ' + p));
  });
  if (count === 0 && problems.length === 0) problems.push('no Kubernetes object in the file');
  return { docs: count, problems };
}

function yamlFiles(dir) {
  return fs.readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml') || f.endsWith('.json'))
    .sort()
    .map((f) => path.join(dir, f));
}

function rel(file) {
  return file === '-' ? '(stdin)' : path.relative(ROOT, file);
}

async function main(argv) {
  await loadCrdModels();
  let failed = 0;
  let passed = 0;
  const explicit = argv.length > 0;
  const good = explicit ? argv.map((f) => (f === '-' ? f : path.resolve(f))) : yamlFiles(DEPLOY_DIR);
  if (good.length === 0) {
    console.log('FAIL: no manifest found in ' + rel(DEPLOY_DIR));
    failed += 1;
  }
  const report = (what, r) => {
    if (r.problems.length) {
      failed += 1;
      console.log('FAIL ' + what);
      r.problems.forEach((p) => console.log('  ' + p));
    } else {
      passed += 1;
      console.log('ok   ' + what + ' (' + r.docs + ' object' + (r.docs === 1 ? '' : 's') + ')');
    }
  };
  // The realistic fixtures are real manifests too, and so is what `ebb inject` makes of the
  // plain ones, classic and native ($EBB_BIN, set by CTest; without it the run fails).
  const fixtures = explicit ? [] : FIXTURE_DIRS.flatMap(yamlFiles);
  for (const file of good) report(rel(file), validateFile(file, !explicit));
  for (const file of fixtures) report(rel(file), validateFile(file, false));
  if (!explicit) {
    const bin = process.env.EBB_BIN;
    if (!bin) {
      failed += 1;
      console.log('FAIL: EBB_BIN is not set, so the output of `ebb inject` is not validated');
    }
    const inputs = yamlFiles(INJECT_DIR).concat([path.join(ROOT, 'deploy', 'examples', 'app.yaml')]);
    for (const file of bin ? inputs : []) {
      for (const flags of [[], ['--native']]) {
        const what = 'ebb inject ' + rel(file) + (flags.length ? ' ' + flags.join(' ') : '');
        const out = spawnSync(bin, ['inject', file, ...flags], { encoding: 'utf8' });
        if (out.status !== 0) {
          failed += 1;
          console.log('FAIL ' + what + ': exit ' + out.status + '\n' + out.stderr);
          continue;
        }
        // deploy/examples/app.yaml is restricted, and so must be what inject adds to it.
        report(what, validateText(out.stdout, file.startsWith(path.join(ROOT, 'deploy'))));
      }
    }
  }
  // The negative fixtures prove the check has teeth: each must fail, and for its stated reason.
  const bad = explicit ? [] : yamlFiles(BAD_DIR);
  for (const file of bad) {
    const m = /^# expect: (.+)$/m.exec(fs.readFileSync(file, 'utf8'));
    const r = validateFile(file, true);
    const hit = m && r.problems.some((p) => p.includes(m[1].trim()));
    if (hit) {
      passed += 1;
      console.log('ok   ' + rel(file) + ' rejected: ' + m[1].trim());
    } else {
      failed += 1;
      console.log('FAIL ' + rel(file) + ' should be rejected with "' + (m ? m[1].trim() : '(no # expect: line)') + '"');
      r.problems.forEach((p) => console.log('  got: ' + p));
    }
  }
  if (!explicit && bad.length < 2) {
    failed += 1;
    console.log('FAIL: expected negative fixtures (a wrong type and an unknown field) in ' + rel(BAD_DIR));
  }
  console.log(passed + ' passed, ' + failed + ' failed');
  return failed === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
