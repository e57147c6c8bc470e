import { z } from 'zod'

/**
 * Text that PostgreSQL stores exactly as given, of at most `max` characters: no NUL (PostgreSQL refuses it in
 * text) and no lone UTF-16 surrogate (stored as U+FFFD, two different strings would become one). Every name and
 * text the service stores from a request or a token goes through this.
 */
export const storableText = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !s.includes('\u0000'), 'must not contain NUL characters')
    .refine((s) => s.isWellFormed(), 'must be valid Unicode (no lone surrogates)')
