package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgxha/pgxha/hasql"
)

// Job is a job queue's payload (Redis, SQS, a table...): the write's token
// travels with it, so the worker, in another process, reads what the
// request wrote. hasql.Token marshals as its text form.
type Job struct {
	CommentID int64       `json:"comment_id"`
	Token     hasql.Token `json:"token"`
}

// enqueueComment writes a comment and returns the job that follows it up,
// with the token of the comment's transaction.
func enqueueComment(ctx context.Context, m *hasql.Manager, body string) ([]byte, error) {
	tx, err := m.Master().Begin(ctx)
	if err != nil {
		return nil, err
	}
	var id int64
	if err := tx.QueryRow(ctx, "INSERT INTO comments (body) VALUES ($1) RETURNING id", body).Scan(&id); err != nil {
		tx.Rollback(ctx)
		return nil, err
	}
	tok, err := hasql.CommitToken(ctx, tx)
	if err != nil && !errors.Is(err, hasql.ErrTokenUnread) {
		return nil, err
	}
	// Committed. Without its token (ErrTokenUnread: the connection broke
	// right after the commit) the job still runs, after no token: it may
	// find the comment missing for a moment, which beats answering the
	// request with an error that a retry would turn into a second comment.
	return json.Marshal(Job{CommentID: id, Token: tok})
}

// work runs one job on the worker's own Manager.
func work(ctx context.Context, m *hasql.Manager, payload []byte) (string, error) {
	var job Job
	if err := json.Unmarshal(payload, &job); err != nil {
		return "", fmt.Errorf("bad job %q: %w", payload, err)
	}
	var body, node string
	var onReplica bool
	err := m.Replica(hasql.After(job.Token)).QueryRow(ctx,
		"SELECT body, current_setting('cluster_name'), pg_is_in_recovery() FROM comments WHERE id = $1", job.CommentID).
		Scan(&body, &node, &onReplica)
	switch {
	case errors.Is(err, hasql.ErrWriteLost):
		// The comment was lost in a failover: the job has nothing to
		// do, and must not wait for it.
		return "", fmt.Errorf("comment %d: %w", job.CommentID, err)
	case errors.Is(err, pgx.ErrNoRows):
		return "", fmt.Errorf("comment %d not found after its token", job.CommentID)
	case err != nil:
		return "", err
	}
	return fmt.Sprintf("comment %d read by the worker after token %s -> %q (served by %s, %s)",
		job.CommentID, job.Token, body, node, role(onReplica)), nil
}

func role(onReplica bool) string {
	if onReplica {
		return "replica"
	}
	return "master"
}
