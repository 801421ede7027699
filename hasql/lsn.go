package hasql

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// lsnSQL reads a position as an integer, which every pgx version scans.
// The master's position is its WAL insert position: after a commit returns,
// it is past the commit record even with synchronous_commit off, when
// pg_current_wal_lsn() (the write position) may still be short of it.
const currentLSNSQL = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8"

// replayTimelineSQL reads a replica's replayed position, then the timeline
// its walreceiver streams: NULL when none runs or the user may not see it
// (no pg_monitor). Read after the position, the walreceiver's timeline is
// at least the one of the WAL replayed up to it (WAL is received and
// flushed before it is replayed). Not the control data's: it shows a
// timeline only from the next restartpoint, and a replica repointed to a
// new master that then lost its walreceiver shows the old one there.
const replayTimelineSQL = `SELECT (coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) - '0/0'::pg_lsn)::int8,
	(SELECT received_tli::int8 FROM pg_stat_wal_receiver)`

// RowQuerier is anything that runs a one-row query: a *pgx.Conn, a
// *pgxpool.Conn, a *pgxpool.Pool or a *Querier.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CurrentLSN returns the master's WAL insert position read through q, which
// must reach the master. Read after a commit returned (on any connection to
// that master), it is at or past the commit's record: pass it to MinLSN to
// read your own writes from a replica. Inside a transaction it is short of
// the commit that is still to come: use CommitLSN for that.
func CurrentLSN(ctx context.Context, q RowQuerier) (LSN, error) {
	var v int64
	if err := q.QueryRow(ctx, currentLSNSQL).Scan(&v); err != nil {
		return 0, fmt.Errorf("hasql: pg_current_wal_insert_lsn: %w", err)
	}
	return LSN(v), nil
}

// CurrentLSN returns the master's current WAL insert position; see the
// function CurrentLSN.
func (m *Manager) CurrentLSN(ctx context.Context) (LSN, error) {
	return CurrentLSN(ctx, m.Master())
}

// ErrCommitLSNPoolTx is returned by CommitLSN for a transaction begun on a
// *pgxpool.Pool: its connection goes back to the pool on commit, before the
// position could be read on it.
var ErrCommitLSNPoolTx = errors.New("hasql: CommitLSN: a transaction begun on a *pgxpool.Pool releases its connection on commit; begin it on m.Master(), a *pgxpool.Conn or a *pgx.Conn")

// CommitLSN commits tx and returns a WAL position at or past its commit
// record, read on the same connection right after the commit: pass it to
// MinLSN to read the transaction's writes from a replica.
//
//	tx, _ := m.Master().Begin(ctx)
//	... tx.Exec(ctx, "INSERT ...") ...
//	lsn, err := hasql.CommitLSN(ctx, tx)
//	row := m.Replica(hasql.MinLSN(lsn)).QueryRow(ctx, "SELECT ...")
//
// It takes transactions from a Querier (m.Master().Begin), a *pgxpool.Conn
// or a *pgx.Conn; one begun on a *pgxpool.Pool is refused before it commits
// (ErrCommitLSNPoolTx), with nothing done. If the commit fails, its error is
// returned as Commit's; if the commit succeeded but the position could not
// be read, the error says so and the transaction is committed.
func CommitLSN(ctx context.Context, tx pgx.Tx) (LSN, error) {
	if rt, ok := tx.(*routedTx); ok {
		if err := rt.Tx.Commit(ctx); err != nil {
			rt.once.Do(rt.conn.Release)
			return 0, err
		}
		if err := stillInTx(rt.conn.Conn(), "CommitLSN"); err != nil {
			rt.once.Do(rt.conn.Release)
			return 0, err
		}
		lsn, err := CurrentLSN(ctx, rt.conn)
		rt.once.Do(rt.conn.Release)
		return lsn, committedErr(err)
	}
	if _, ok := tx.(*pgxpool.Tx); ok {
		return 0, ErrCommitLSNPoolTx
	}
	conn := tx.Conn()
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	if err := stillInTx(conn, "CommitLSN"); err != nil {
		return 0, err
	}
	lsn, err := CurrentLSN(ctx, conn)
	return lsn, committedErr(err)
}

// ErrNestedTx is returned by CommitLSN and CommitToken for a transaction
// that committed nothing: one begun inside another (tx.Begin on a
// transaction makes a savepoint), whose commit released its savepoint, or
// one whose connection is in a transaction still after its commit. Its
// writes commit with the outer transaction, at a position not known yet: a
// position read now is before their commit record, and a replica that
// replayed it does not have them. Commit the outermost transaction with
// CommitLSN or CommitToken.
var ErrNestedTx = errors.New("hasql: the transaction is nested in one still open (a savepoint): its writes commit with that one; take the position or token when committing the outermost transaction")

// stillInTx returns ErrNestedTx, with what said it, when conn is in a
// transaction after a commit.
func stillInTx(conn *pgx.Conn, what string) error {
	if conn.PgConn().TxStatus() != 'I' {
		return fmt.Errorf("%w (%s)", ErrNestedTx, what)
	}
	return nil
}

func committedErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("hasql: CommitLSN: committed, but the position could not be read: %w: %w", ErrTokenUnread, err)
}
