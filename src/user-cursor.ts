import { InvalidFieldsError } from './service-errors.ts'

/**
 * The cursor of a listing in user id order (the directory, a roll-call): the last user id of a page, base64url, so
 * that clients pass it back as it is (a user id may hold any character) and do not build their own.
 */
export const cursorOfUser = (userId: string) => Buffer.from(userId, 'utf8').toString('base64url')

/** The user id a cursor stands for; a cursor no listing gave is a 400 naming `querystring.cursor`. */
export function userOfCursor(cursor: string): string {
  const userId = /^[A-Za-z0-9_-]{1,400}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : ''
  if (!userId || cursorOfUser(userId) !== cursor) {
    throw new InvalidFieldsError([
      { path: 'querystring.cursor', message: 'is not a cursor this listing gave (pass `next` as it is)' },
    ])
  }
  return userId
}
