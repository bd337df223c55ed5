package remote

import "time"

// counters are the job counts kept per host and in total. Guarded by
// Pool.mu.
type counters struct {
	submitted, running, done, failed, retried, uploads, envStarts, idleCloses int
}

// HostStats are one host's figures (or the pool's totals).
type HostStats struct {
	// Submitted counts jobs submitted for this host by name (for the
	// totals: all jobs submitted).
	Submitted int
	// Running counts jobs running now; Queued jobs waiting (totals only).
	Running, Queued int
	// Done counts jobs that ran to a result (including the function's own
	// errors); Failed those that ended in failure, timeout or
	// cancellation; Retried the attempts that were tried again.
	Done, Failed, Retried int
	// Uploads counts agent uploads.
	Uploads int
	// EnvStarts counts connections whose agent started on the first
	// frames carried in the environment with the exec, without waiting a
	// round trip for stdin (see AgentOptions.StdinOnly).
	EnvStarts int
	// IdleCloses counts connections closed for having had no job for
	// PoolConfig.IdleTimeout.
	IdleCloses int
	// WorkersBusy is the number of worker slots in use; WorkersAlive the
	// workers the agent keeps (busy ones plus warm ones), as far as the
	// master knows. With Pipeline, calls sent beyond MaxPerHost wait on the
	// agent and are counted in Waiting, not here.
	WorkersBusy, WorkersAlive int
	// Waiting counts calls sent to the host that wait there for a worker
	// (PoolConfig.Pipeline).
	Waiting int
	// Utilisation is the share of worker-slot time spent running jobs
	// since the host connected, between 0 and 1.
	Utilisation float64
	// Idle is the time the host was connected with no job running.
	Idle time.Duration
	// Connected is the time since the current connection was made; zero
	// when not connected.
	Connected time.Duration
	// Down reports a host out of rotation after a failure.
	Down bool
	// LastError is the host's last transport failure, or "".
	LastError string
}

// PoolStats are a pool's activity figures.
type PoolStats struct {
	Total HostStats
	Hosts map[string]HostStats
}

// Stats returns the pool's figures now.
func (p *Pool) Stats() PoolStats {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PoolStats{Hosts: make(map[string]HostStats, len(p.order))}
	t := &st.Total
	t.Submitted, t.Running, t.Done, t.Failed, t.Retried, t.Uploads, t.EnvStarts, t.IdleCloses =
		p.total.submitted, p.total.running, p.total.done, p.total.failed, p.total.retried, p.total.uploads, p.total.envStarts, p.total.idleCloses
	t.Queued = len(p.queue)
	var slotTime, busyTime time.Duration
	for _, h := range p.order {
		hs := HostStats{
			Submitted: h.st.submitted, Running: h.st.running, Done: h.st.done, Failed: h.st.failed,
			Retried: h.st.retried, Uploads: h.st.uploads, EnvStarts: h.st.envStarts, IdleCloses: h.st.idleCloses, Down: h.down,
			WorkersBusy: min(h.busy, p.cfg.MaxPerHost), Waiting: max(0, h.busy-p.cfg.MaxPerHost),
		}
		dt := now.Sub(h.busySince)
		busy := h.busyTime + time.Duration(min(h.busy, p.cfg.MaxPerHost))*dt
		idle := h.idleTime
		if h.conn != nil && h.conn.alive() {
			hs.Connected = now.Sub(h.connectedAt)
			hs.WorkersAlive = max(hs.WorkersBusy, p.cfg.MinWarm)
			if h.busy == 0 {
				idle += dt
			}
			slot := time.Duration(p.cfg.MaxPerHost) * hs.Connected
			if slot > 0 {
				hs.Utilisation = min(1, float64(busy)/float64(slot))
			}
			slotTime += slot
			busyTime += busy
		}
		hs.Idle = idle
		if h.lastErr != nil {
			hs.LastError = h.lastErr.Error()
		}
		t.WorkersBusy += hs.WorkersBusy
		t.Waiting += hs.Waiting
		t.WorkersAlive += hs.WorkersAlive
		t.Idle += hs.Idle
		st.Hosts[h.name] = hs
	}
	if slotTime > 0 {
		t.Utilisation = min(1, float64(busyTime)/float64(slotTime))
	}
	return st
}
