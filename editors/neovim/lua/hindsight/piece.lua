-- How much of a suggestion "accept word" and "accept line" take.
local M = {}

--- The next word of `text` with the whitespace before it (a newline and indentation included), or a
--- run of punctuation; the whole text when it is only whitespace.
function M.word(text)
  return text:match('^%s*[%w_]+') or text:match('^%s*[^%w_%s]+') or text
end

--- The rest of the current line; at a line break, the break and the whole next line.
function M.line(text)
  return text:match('^[^\n]+') or text:match('^\n[^\n]*') or text
end

--- The piece of `text` that accepting `part` ('all' | 'word' | 'line') takes.
function M.take(text, part)
  if part == 'word' then
    return M.word(text)
  elseif part == 'line' then
    return M.line(text)
  end
  return text
end

--- Put `piece` into the buffer at the cursor and leave the cursor after it.
function M.insert(bufnr, piece)
  local win = vim.fn.bufwinid(bufnr)
  local row, col = unpack(vim.api.nvim_win_get_cursor(win))
  local lines = vim.split(piece, '\n', { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col, lines)
  local last = #lines == 1 and col + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(win, { row + #lines - 1, last })
end

return M
