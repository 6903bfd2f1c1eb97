#!/usr/bin/env node
'use strict'

// A runnable model of kubernetes-external-secrets (KES) 8.x's daemon + poller
// scheduling, driven by a real Kubernetes API server, with a stub backend.
// See docs/kes.md for the source lines it follows and what it measured.
//
// Why a model and not KES's own modules: KES was never published to the npm
// registry (`npm view kubernetes-external-secrets` -> 404), and the only
// registries reachable here are npm, PyPI, crates.io and Debian. So this
// script re-implements, in its own code, the behaviour documented from KES's
// sources (lib/daemon.js, lib/poller.js, lib/external-secret.js of 8.x,
// unchanged in the parts that matter since 2.1.0), on top of the same
// Kubernetes client library KES uses (godaddy's `kubernetes-client` 9.0.0,
// configured the same way: KubeConfig.loadFromDefault + request backend +
// loadSpec + addCustomResourceDefinition). What it proves about the API
// server (events, generation, subresource behaviour, resourceVersion
// conflicts) is real; what it proves about KES holds to the extent that the
// rules below match KES's code, which docs/kes.md quotes line by line:
//
//   daemon:  every ADDED or MODIFIED watch event stops the object's poller and
//            starts a new one; DELETED stops it; a watch restart (stream end,
//            error, or WATCH_TIMEOUT ms without an event) stops them all and
//            re-watches from scratch (so every object comes back as ADDED).
//   start(): GET .../status (fresh from the server). If
//            status.observedGeneration (default 0) < the event object's
//            metadata.generation: poll now. Else, if DISABLE_POLLING is set:
//            never. Else: if status.lastSync (Date.parse, NaN -> 0) is in the
//            future: poll now; otherwise poll after
//            max(POLLER_INTERVAL_MILLISECONDS - (now - lastSync), 0).
//   stop():  clears the pending timer only. A start() whose status GET is still
//            in flight is not cancelled (as in KES): it arms its timer anyway.
//   poll:    GET namespace, backend fetch, upsert the Secret (skip if equal),
//            then PUT .../status with the *event object* (its
//            resourceVersion included) and status {lastSync: now,
//            observedGeneration: event generation, status}. A 409 is logged and
//            ignored. A poll does not schedule the next one: the MODIFIED event
//            of its own status write re-creates the poller, which schedules it.
//
// Environment:
//   KUBECONFIG                     kubeconfig to use (KubeConfig.loadFromDefault)
//   POLLER_INTERVAL_MILLISECONDS   default 10000 (KES's default)
//   WATCH_TIMEOUT                  ms without a watch event before re-watching; default 60000
//   DISABLE_POLLING                if set (any value), only generation changes poll (KES semantics)
//   WATCHED_NAMESPACES             comma-separated namespaces to watch; empty = all namespaces
//   KES_STUB_VALUE                 value the stub backend returns for every key; default "stub"
//   KES_WRITE_SECRET               "0" to skip the Secret upsert (status is still written); default 1
//   KES_STUB_DELAY_MS              the stub backend answers this many ms after the `poll` line
//                                  (stands in for AWS latency); default 0
//
// Output: one JSON object per line on stdout, `t` = Date.now() (ms since epoch).
//   {"ready":true,"namespaces":[..],"t":..}          every watch stream got its HTTP 200
//   {"watch":"ns/name","type":"MODIFIED","resourceVersion":"..","generation":1,
//    "observedGeneration":0,"lastSync":"..","t":..}   one per watch event
//   {"schedule":"ns/name","in":ms|null,"why":"..","t":..}  a poller started (in=null: no poll)
//   {"poll":"ns/name","t":..}                        the stub backend was called (one per poll)
//   {"status":"ns/name","result":"written"|"conflict"|"error","observedGeneration":1,"t":..}
//   {"rewatch":"ns|*","reason":"timeout"|"end"|"error","t":..}
//   {"error":"..","t":..}
// Diagnostics go to stderr. SIGTERM/SIGINT exit 0.

const JSONStream = require('json-stream')
const { Client, KubeConfig } = require('kubernetes-client')
const Request = require('kubernetes-client/backends/request')

const CRD_NAME = 'externalsecrets.kubernetes-client.io'

function envInt (name, dflt) {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got '${v}'`)
  return n
}

const config = {
  intervalMs: envInt('POLLER_INTERVAL_MILLISECONDS', 10000),
  watchTimeoutMs: envInt('WATCH_TIMEOUT', 60000),
  pollingDisabled: 'DISABLE_POLLING' in process.env,
  namespaces: (process.env.WATCHED_NAMESPACES || '').split(',').map(s => s.trim()).filter(Boolean),
  stubValue: process.env.KES_STUB_VALUE || 'stub',
  writeSecret: process.env.KES_WRITE_SECRET !== '0',
  stubDelayMs: envInt('KES_STUB_DELAY_MS', 0)
}

function out (obj) {
  process.stdout.write(JSON.stringify({ ...obj, t: Date.now() }) + '\n')
}

function diag (...args) {
  process.stderr.write(`[run-poller] ${args.join(' ')}\n`)
}

// ---------------------------------------------------------------- backend --

// Stands in for KES's SystemManagerBackend/SecretsManagerBackend: same entry
// point (getSecretManifestData({ spec }) -> { name: base64 }), no AWS.
const stubBackend = {
  calls: 0,
  async getSecretManifestData ({ spec, id }) {
    this.calls++
    out({ poll: id, n: this.calls })
    if (config.stubDelayMs > 0) await new Promise(resolve => setTimeout(resolve, config.stubDelayMs))
    const data = {}
    for (const item of spec.data || []) {
      if (item && item.name) data[item.name] = Buffer.from(config.stubValue).toString('base64')
    }
    return data
  }
}

// ----------------------------------------------------------------- poller --

class ModelPoller {
  constructor ({ kubeClient, crd, externalSecret }) {
    this.kube = kubeClient
    this.es = externalSecret // the watch event's object, as KES keeps it
    this.spec = externalSecret.spec || externalSecret.secretDescriptor || {}
    const { name, namespace, uid } = externalSecret.metadata
    this.name = name
    this.namespace = namespace
    this.id = `${namespace}/${name}`
    this.ownerReference = { apiVersion: externalSecret.apiVersion, controller: true, kind: externalSecret.kind, name, uid }
    this.statusApi = kubeClient.apis[crd.spec.group].v1.namespaces(namespace)[crd.spec.names.plural](name).status
    this.timer = null
  }

  start () {
    if (this.timer) return this
    this.scheduleNext()
    return this
  }

  stop () {
    if (!this.timer) return this
    clearTimeout(this.timer)
    this.timer = null
    return this
  }

  async scheduleNext () {
    try {
      const res = await this.statusApi.get()
      const status = (res.body && res.body.status) || {}
      const observedGeneration = status.observedGeneration === undefined ? 0 : status.observedGeneration
      const lastSync = status.lastSync === undefined ? null : status.lastSync
      const generation = this.es.metadata.generation

      if (observedGeneration < generation) return this.arm(0, `observedGeneration ${observedGeneration} < generation ${generation}`)
      if (config.pollingDisabled) return out({ schedule: this.id, in: null, why: 'DISABLE_POLLING and observedGeneration >= generation' })

      const now = Date.now()
      const last = Date.parse(lastSync) || 0
      if (last > now) return this.arm(0, 'lastSync in the future')
      const inMs = Math.max(config.intervalMs - (now - last), 0)
      return this.arm(inMs, `interval (lastSync ${lastSync === null ? 'absent' : lastSync})`)
    } catch (err) {
      out({ error: `status GET for ${this.id}: ${err.message}` })
    }
  }

  arm (inMs, why) {
    if (this.timer) clearTimeout(this.timer)
    this.timer = setTimeout(() => this.poll(), inMs)
    out({ schedule: this.id, in: inMs, why })
  }

  async poll () {
    try {
      await this.upsertSecret()
      await this.writeStatus('SUCCESS')
    } catch (err) {
      out({ error: `poll of ${this.id}: ${err.message}` })
      try { await this.writeStatus(`ERROR, ${err.message}`) } catch (_) { /* logged in writeStatus */ }
    }
  }

  async upsertSecret () {
    const core = this.kube.api.v1.namespaces(this.namespace)
    await core.get() // KES reads the namespace for its permission annotations
    const data = await stubBackend.getSecretManifestData({ spec: this.spec, id: this.id })
    if (!config.writeSecret) return
    const manifest = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: this.name, ownerReferences: [this.ownerReference] },
      type: 'Opaque',
      data
    }
    let existing
    try {
      existing = (await core.secrets(this.name).get()).body
    } catch (err) {
      if (err.statusCode !== 404) throw err
    }
    if (existing === undefined) return core.secrets.post({ body: manifest })
    if (JSON.stringify(existing.data || {}) === JSON.stringify(data)) return
    return core.secrets(this.name).put({ body: manifest })
  }

  async writeStatus (status) {
    const observedGeneration = this.es.metadata.generation
    try {
      await this.statusApi.put({
        body: { ...this.es, status: { lastSync: new Date().toISOString(), observedGeneration, status } }
      })
      out({ status: this.id, result: 'written', observedGeneration })
    } catch (err) {
      if (err.statusCode === 409) return out({ status: this.id, result: 'conflict', observedGeneration })
      out({ status: this.id, result: 'error', observedGeneration, message: err.message })
      throw err
    }
  }
}

// ----------------------------------------------------------------- daemon --

class ModelDaemon {
  constructor ({ kubeClient, crd }) {
    this.kube = kubeClient
    this.crd = crd
    this.pollers = new Map() // uid -> poller
  }

  handle (event) {
    const obj = event.object
    if (event.type === 'DELETED_ALL') {
      for (const p of this.pollers.values()) p.stop()
      this.pollers.clear()
      return
    }
    if (!obj || !obj.metadata || !obj.metadata.uid) {
      out({ error: `unhandled watch event ${event.type}: ${JSON.stringify(obj)}` })
      return
    }
    const status = obj.status || {}
    out({
      watch: `${obj.metadata.namespace}/${obj.metadata.name}`,
      type: event.type,
      resourceVersion: obj.metadata.resourceVersion,
      generation: obj.metadata.generation,
      observedGeneration: status.observedGeneration === undefined ? null : status.observedGeneration,
      lastSync: status.lastSync === undefined ? null : status.lastSync
    })
    const id = obj.metadata.uid
    const old = this.pollers.get(id)
    if (old) {
      old.stop()
      this.pollers.delete(id)
    }
    if (event.type === 'ADDED' || event.type === 'MODIFIED') {
      const p = new ModelPoller({ kubeClient: this.kube, crd: this.crd, externalSecret: obj })
      this.pollers.set(id, p.start())
    } else if (event.type !== 'DELETED') {
      out({ error: `unhandled watch event type ${event.type}` })
    }
  }
}

// ------------------------------------------------------------------ watch --

function watchPath (crd, namespace) {
  const { group, names: { plural } } = crd.spec
  return namespace
    ? `/apis/${group}/v1/watch/namespaces/${namespace}/${plural}`
    : `/apis/${group}/v1/watch/${plural}`
}

// One watch loop per namespace (or one for all), restarted like KES's
// startWatcher: on end, on error, or after watchTimeoutMs without an event.
async function watchLoop ({ kubeClient, crd, namespace, daemon, onFirstResponse }) {
  const label = namespace || '*'
  let first = true
  for (;;) {
    const reason = await new Promise((resolve) => {
      const req = kubeClient.backend.http({ method: 'GET', pathname: watchPath(crd, namespace), stream: true })
      const json = new JSONStream()
      let done = false
      let timer = null
      const finish = (why) => {
        if (done) return
        done = true
        clearTimeout(timer)
        try { req.abort() } catch (_) { /* already closed */ }
        resolve(why)
      }
      const rearm = () => {
        clearTimeout(timer)
        timer = setTimeout(() => finish('timeout'), config.watchTimeoutMs)
      }
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          out({ error: `watch ${label}: HTTP ${res.statusCode}` })
          return finish('error')
        }
        if (first) {
          first = false
          onFirstResponse()
        }
      })
      req.on('error', (err) => {
        if (done) return // the abort() of a finished watch
        out({ error: `watch ${label}: ${err.message}` })
        finish('error')
      })
      req.on('end', () => finish('end'))
      req.pipe(json)
      json.on('data', (event) => { rearm(); daemon.handle(event) })
      json.on('error', (err) => {
        if (done) return
        out({ error: `watch ${label} stream: ${err.message}` })
        finish('error')
      })
      rearm()
    })
    out({ rewatch: label, reason })
    daemon.handle({ type: 'DELETED_ALL' })
    if (reason === 'error') await new Promise(resolve => setTimeout(resolve, 500))
  }
}

// ------------------------------------------------------------------- main --

async function main () {
  const kubeconfig = new KubeConfig()
  kubeconfig.loadFromDefault()
  const backend = new Request({ kubeconfig })
  const kubeClient = new Client({ backend })
  await kubeClient.loadSpec()
  const crd = (await kubeClient.apis['apiextensions.k8s.io'].v1.customresourcedefinitions(CRD_NAME).get()).body
  kubeClient.addCustomResourceDefinition(crd)
  const hasStatus = (crd.spec.versions || []).some(v => v.name === 'v1' && v.subresources && v.subresources.status)
  if (!hasStatus) throw new Error(`${CRD_NAME} has no status subresource on v1: KES's status GET/PUT would 404`)
  diag(`interval=${config.intervalMs}ms watchTimeout=${config.watchTimeoutMs}ms pollingDisabled=${config.pollingDisabled} namespaces=${config.namespaces.join(',') || '*'}`)

  const daemon = new ModelDaemon({ kubeClient, crd })
  const targets = config.namespaces.length ? config.namespaces : [null]
  let pending = targets.length
  const onFirstResponse = () => {
    pending--
    if (pending === 0) out({ ready: true, namespaces: config.namespaces })
  }
  for (const namespace of targets) {
    watchLoop({ kubeClient, crd, namespace, daemon, onFirstResponse }).catch((err) => {
      out({ error: `watch loop crashed: ${err.stack || err}` })
      process.exit(1)
    })
  }
}

process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))

main().catch((err) => {
  out({ error: `startup: ${err.message}` })
  diag(err.stack || String(err))
  process.exit(1)
})
