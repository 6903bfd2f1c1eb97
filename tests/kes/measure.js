#!/usr/bin/env node
'use strict'

// Measures, against a real API server, how long after each candidate change to
// a KES ExternalSecret the run-poller.js model polls its backend, and whether
// the status write that follows causes further polls. Prints one JSON line per
// trial, then a Markdown summary table. See docs/kes.md.
//
//   . target/stack/env && node tests/kes/measure.js
//
// Environment: KUBECONFIG (required), KES_MEASURE_ROUNDS (default 3),
// KES_MEASURE_STUB_DELAY_MS (stub backend latency, default 50),
// KES_MEASURE_WAIT_MS (how long to wait for a poll, default 8000),
// KES_MEASURE_SETTLE_MS (window after the first poll in which further polls
// count as extra, default 4000), KES_MEASURE_MODES ("normal,disabled").
// Creates namespaces kes-measure-<mode>-<random> (never deleted: the local
// stack has no namespace controller) and deletes the objects it made in them.

const { spawn, execFileSync } = require('child_process')
const path = require('path')
const readline = require('readline')
const crypto = require('crypto')
const { Client, KubeConfig } = require('kubernetes-client')
const Request = require('kubernetes-client/backends/request')

const ROUNDS = Number(process.env.KES_MEASURE_ROUNDS || 3)
const WAIT_MS = Number(process.env.KES_MEASURE_WAIT_MS || 8000)
const SETTLE_MS = Number(process.env.KES_MEASURE_SETTLE_MS || 4000)
const MODES = (process.env.KES_MEASURE_MODES || 'normal,disabled').split(',').filter(Boolean)
const INTERVAL_MS = 600000
const STUB_DELAY_MS = Number(process.env.KES_MEASURE_STUB_DELAY_MS || 50) // stand-in for SSM latency
const RES = 'externalsecrets.kubernetes-client.io'
const NAME = 'probe'

if (!process.env.KUBECONFIG) {
  console.error('KUBECONFIG is not set: source target/stack/env first')
  process.exit(2)
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function kubectl (args, input) {
  return execFileSync('kubectl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
}

const CANDIDATES = {
  'a-annotation': ns => ['-n', ns, 'annotate', RES, NAME, `ssm-resync.io/force-sync=${Date.now()}`, '--overwrite'],
  'b-status-observedGeneration-0': ns => ['-n', ns, 'patch', RES, NAME, '--subresource=status', '--type=merge',
    '-p', '{"status":{"observedGeneration":0}}'],
  'b2-status-observedGeneration-unique-negative': ns => ['-n', ns, 'patch', RES, NAME, '--subresource=status', '--type=merge',
    '-p', JSON.stringify({ status: { observedGeneration: -Date.now() } })],
  'c-status-lastSync-epoch': ns => ['-n', ns, 'patch', RES, NAME, '--subresource=status', '--type=merge',
    '-p', '{"status":{"lastSync":"1970-01-01T00:00:00.000Z"}}'],
  'c2-status-lastSync-null': ns => ['-n', ns, 'patch', RES, NAME, '--subresource=status', '--type=merge',
    '-p', '{"status":{"lastSync":null}}'],
  'd-spec-change': ns => ['-n', ns, 'patch', RES, NAME, '--type=merge',
    '-p', JSON.stringify({ spec: { ssmResyncNonce: String(Date.now()) } })]
}

class Harness {
  constructor (ns, mode) {
    this.ns = ns
    this.lines = []
    this.waiters = []
    const env = { ...process.env, POLLER_INTERVAL_MILLISECONDS: String(INTERVAL_MS), WATCHED_NAMESPACES: ns, KES_STUB_DELAY_MS: String(STUB_DELAY_MS) }
    delete env.DISABLE_POLLING
    if (mode === 'disabled') env.DISABLE_POLLING = '1'
    this.child = spawn(process.execPath, [path.join(__dirname, 'run-poller.js')], { env, stdio: ['ignore', 'pipe', 'inherit'] })
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      let obj
      try { obj = JSON.parse(line) } catch (_) { return }
      this.lines.push(obj)
      this.waiters = this.waiters.filter(w => !w())
    })
  }

  // Resolves with the first line at index >= from matching pred, or null on timeout.
  waitFor (pred, timeoutMs, from = 0) {
    return new Promise((resolve) => {
      const check = () => {
        for (let i = from; i < this.lines.length; i++) {
          if (pred(this.lines[i])) { clearTimeout(timer); resolve(this.lines[i]); return true }
        }
        return false
      }
      const timer = setTimeout(() => { this.waiters = this.waiters.filter(w => w !== check); resolve(null) }, timeoutMs)
      if (!check()) this.waiters.push(check)
    })
  }

  // Waits until no poll/status line has arrived for quietMs.
  async quiet (quietMs = 1500) {
    for (;;) {
      const n = this.lines.length
      await sleep(quietMs)
      const fresh = this.lines.slice(n).filter(l => l.poll || l.status)
      if (fresh.length === 0) return
    }
  }

  stop () { this.child.kill('SIGTERM') }
}

async function trial (h, ns, candidate, argsFn, mode) {
  await h.quiet()
  const from = h.lines.length
  const t0 = Date.now()
  kubectl(argsFn(ns))
  const t1 = Date.now()
  const first = await h.waitFor(l => l.poll, WAIT_MS, from)
  const windowEnd = (first ? first.t : t1) + SETTLE_MS
  await sleep(Math.max(windowEnd - Date.now(), 0) + 300)
  const after = h.lines.slice(from)
  const ourEvent = after.find(l => l.watch && l.type === 'MODIFIED')
  const polls = after.filter(l => l.poll)
  const statuses = after.filter(l => l.status)
  const lastSchedule = [...after].reverse().find(l => l.schedule)
  const rec = {
    mode,
    candidate,
    kubectl_ms: t1 - t0,
    poll_after_ms: first ? first.t - t0 : null,
    poll_after_event_ms: first && ourEvent ? first.t - ourEvent.t : null,
    polls_in_window: polls.length,
    extra_polls: Math.max(polls.length - 1, 0),
    status_writes: statuses.filter(s => s.result === 'written').length,
    status_conflicts: statuses.filter(s => s.result === 'conflict').length,
    watch_events: after.filter(l => l.watch).length,
    next_schedule_in_ms: lastSchedule ? lastSchedule.in : undefined,
    next_schedule_why: lastSchedule ? lastSchedule.why : undefined
  }
  console.log(JSON.stringify(rec))
  return rec
}

// Five back-to-back (b) patches: how many polls do they cause?
async function burst (h, ns, mode) {
  await h.quiet()
  const from = h.lines.length
  const t0 = Date.now()
  for (let i = 0; i < 5; i++) kubectl(CANDIDATES['b-status-observedGeneration-0'](ns))
  const t1 = Date.now()
  await sleep(WAIT_MS)
  const after = h.lines.slice(from)
  const rec = {
    mode,
    candidate: 'b-burst-x5',
    kubectl_ms: t1 - t0,
    poll_after_ms: after.find(l => l.poll) ? after.find(l => l.poll).t - t0 : null,
    polls_in_window: after.filter(l => l.poll).length,
    status_writes: after.filter(l => l.status && l.result === 'written').length,
    status_conflicts: after.filter(l => l.status && l.result === 'conflict').length,
    watch_events: after.filter(l => l.watch).length
  }
  console.log(JSON.stringify(rec))
  return rec
}

// (b) again the moment the poll caused by a first (b) starts, i.e. while the
// model's upsert + status PUT are in flight with the older resourceVersion.
async function duringPoll (h, ns, mode) {
  await h.quiet()
  const from = h.lines.length
  const t0 = Date.now()
  kubectl(CANDIDATES['b-status-observedGeneration-0'](ns))
  const first = await h.waitFor(l => l.poll, WAIT_MS, from)
  kubectl(CANDIDATES['b-status-observedGeneration-0'](ns))
  await sleep(WAIT_MS)
  const after = h.lines.slice(from)
  const st = kubectl(['-n', ns, 'get', RES, NAME, '-o', 'jsonpath={.metadata.generation} {.status.observedGeneration}']).trim()
  const rec = {
    mode,
    candidate: 'b-again-during-poll',
    poll_after_ms: first ? first.t - t0 : null,
    polls_in_window: after.filter(l => l.poll).length,
    status_writes: after.filter(l => l.status && l.result === 'written').length,
    status_conflicts: after.filter(l => l.status && l.result === 'conflict').length,
    watch_events: after.filter(l => l.watch).length,
    final_generation_observedGeneration: st
  }
  console.log(JSON.stringify(rec))
  return rec
}

// In-process merge patch of .../status (no kubectl start-up delay), so it can
// land while the model's poll (Secret upsert + status PUT) is still in flight.
let backend = null
function statusPatchNow (ns, body) {
  if (!backend) {
    const kubeconfig = new KubeConfig()
    kubeconfig.loadFromDefault()
    backend = new Client({ backend: new Request({ kubeconfig }) }).backend
  }
  return backend.http({
    method: 'PATCH',
    pathname: `/apis/kubernetes-client.io/v1/namespaces/${ns}/externalsecrets/${NAME}/status`,
    headers: { 'content-type': 'application/merge-patch+json' },
    body
  })
}

// A second trigger sent in-process the moment the poll caused by a first one
// calls the backend (i.e. after the fetch, before the status PUT). With the
// same body (observedGeneration 0 twice) the second patch changes nothing, so
// the API server records no write and sends no event: the trigger is lost.
// With a unique body (a new negative number each time) it is a real write,
// the model's in-flight status PUT gets 409, and the new poller polls again.
let counter = 0
async function race (h, ns, mode, unique) {
  const value = () => unique ? -(Date.now() * 1000 + (counter++ % 1000)) : 0
  await h.quiet()
  const from = h.lines.length
  const t0 = Date.now()
  await statusPatchNow(ns, { status: { observedGeneration: value() } })
  const first = await h.waitFor(l => l.poll, WAIT_MS, from)
  const tPatch2 = Date.now()
  await statusPatchNow(ns, { status: { observedGeneration: value() } })
  await sleep(WAIT_MS)
  const after = h.lines.slice(from)
  const st = kubectl(['-n', ns, 'get', RES, NAME, '-o', 'jsonpath={.metadata.generation} {.status.observedGeneration}']).trim()
  const rec = {
    mode,
    candidate: unique ? 'b2-unique-twice-second-mid-poll' : 'b-zero-twice-second-mid-poll',
    poll_after_ms: first ? first.t - t0 : null,
    second_patch_ms_after_poll: first ? tPatch2 - first.t : null,
    polls_in_window: after.filter(l => l.poll).length,
    status_writes: after.filter(l => l.status && l.result === 'written').length,
    status_conflicts: after.filter(l => l.status && l.result === 'conflict').length,
    watch_events: after.filter(l => l.watch).length,
    final_generation_observedGeneration: st
  }
  console.log(JSON.stringify(rec))
  return rec
}

async function runMode (mode) {
  const ns = `kes-measure-${mode}-${crypto.randomBytes(4).toString('hex')}`
  kubectl(['create', 'namespace', ns])
  kubectl(['-n', ns, 'apply', '-f', '-'], JSON.stringify({
    apiVersion: 'kubernetes-client.io/v1',
    kind: 'ExternalSecret',
    metadata: { name: NAME },
    spec: { backendType: 'systemManager', region: 'us-east-1', data: [{ key: '/x', name: 'x' }] }
  }))
  const h = new Harness(ns, mode)
  const results = []
  try {
    if (!await h.waitFor(l => l.ready, 20000)) throw new Error('run-poller.js never printed ready')
    if (!await h.waitFor(l => l.status && l.result === 'written', 20000)) throw new Error('no initial poll + status write')
    if (!await h.waitFor(l => l.schedule && l.in !== 0, 10000)) throw new Error('no steady-state schedule')
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, fn] of Object.entries(CANDIDATES)) {
        results.push(await trial(h, ns, name, fn, mode))
      }
    }
    results.push(await burst(h, ns, mode))
    results.push(await duringPoll(h, ns, mode))
    for (let r = 0; r < ROUNDS; r++) results.push(await race(h, ns, mode, false))
    for (let r = 0; r < ROUNDS; r++) results.push(await race(h, ns, mode, true))
    // Baseline: with nothing changed, no poll may happen in WAIT_MS (interval is 10 min).
    await h.quiet()
    const from = h.lines.length
    await sleep(WAIT_MS)
    const idle = { mode, candidate: 'none (idle baseline)', polls_in_window: h.lines.slice(from).filter(l => l.poll).length }
    console.log(JSON.stringify(idle))
    results.push(idle)
  } finally {
    h.stop()
    try { kubectl(['-n', ns, 'delete', RES, NAME, '--wait=false']) } catch (e) { console.error(e.message) }
    try { kubectl(['-n', ns, 'delete', 'secret', NAME, '--ignore-not-found', '--wait=false']) } catch (e) { console.error(e.message) }
  }
  return results
}

function summarize (all) {
  const groups = new Map()
  for (const r of all) {
    const key = `${r.mode}|${r.candidate}`
    if (!groups.has(key)) groups.set(key, [])
    groups.get(key).push(r)
  }
  const fmt = (xs) => {
    if (xs.every(x => x === undefined)) return '-'
    const v = xs.filter(x => x !== null && x !== undefined)
    if (v.length === 0) return 'no poll'
    if (v.length < xs.length) return `${v.join('/')} (${xs.length - v.length} without poll)`
    return v.join(' / ')
  }
  console.log('\n| mode | candidate | ms from kubectl start to poll | ms from its watch event to poll | polls per trial | status writes / conflicts | next poll scheduled in |')
  console.log('|---|---|---|---|---|---|---|')
  for (const [key, rs] of groups) {
    const [mode, candidate] = key.split('|')
    console.log(`| ${mode} | ${candidate} | ${fmt(rs.map(r => r.poll_after_ms))} | ${fmt(rs.map(r => r.poll_after_event_ms))} | ` +
      `${rs.map(r => r.polls_in_window).join(' / ')} | ${rs.map(r => `${r.status_writes ?? '-'}/${r.status_conflicts ?? '-'}`).join(' ')} | ` +
      `${rs.map(r => r.next_schedule_in_ms === undefined ? '-' : r.next_schedule_in_ms === null ? 'never' : r.next_schedule_in_ms).join(' / ')} |`)
  }
}

async function main () {
  const all = []
  for (const mode of MODES) all.push(...await runMode(mode))
  summarize(all)
}

main().catch((err) => { console.error(err.stack || err); process.exit(1) })
