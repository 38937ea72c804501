-- hindsight for Neovim: starts `hindsight serve` for the configured filetypes and shows its inline
-- suggestions, through Neovim's built-in inline completion (0.12+) or the plugin's own ghost text.
local config = require('hindsight.config')
local lsp = require('hindsight.lsp')

local api = vim.api
local M = {}

M.options = nil ---@type table?
M.view = nil ---@type table? require('hindsight.builtin') or require('hindsight.ghost')

local function warn(message, level)
  vim.notify('hindsight: ' .. message, level or vim.log.levels.WARN)
end

local function root_dir(bufnr)
  local name = api.nvim_buf_get_name(bufnr)
  local found = vim.fs.find(M.options.root_markers, { path = vim.fs.dirname(name), upward = true })[1]
  return found and vim.fs.dirname(found) or vim.fs.dirname(name)
end

--- Start the server for `bufnr` (or attach to the running one).
function M.start(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  if vim.bo[bufnr].buftype ~= '' or api.nvim_buf_get_name(bufnr) == '' then
    return
  end
  if vim.fn.executable(M.options.cmd[1]) == 0 then
    warn(('cannot start the server: %s is not executable (see :checkhealth hindsight)'):format(M.options.cmd[1]))
    return
  end
  return vim.lsp.start({
    name = 'hindsight',
    cmd = M.options.cmd,
    root_dir = root_dir(bufnr),
    init_options = M.options.server,
    -- One server for every root: the model is loaded once.
    reuse_client = function(client, conf)
      return client.name == conf.name
    end,
  }, { bufnr = bufnr })
end

local function on_attach(bufnr, client_id)
  M.view.attach(bufnr, client_id, M.options)
end

local function map_keys()
  local keys = M.options.keys
  local function imap(lhs, fn, desc)
    if lhs then
      vim.keymap.set('i', lhs, fn, { expr = true, replace_keycodes = true, desc = 'hindsight: ' .. desc })
    end
  end
  -- Each key does its usual thing when no suggestion is on screen.
  local function either(lhs, action, desc)
    imap(lhs, function()
      local bufnr = api.nvim_get_current_buf()
      if M.view and M.view.visible(bufnr) then
        vim.schedule(action)
        return ''
      end
      return lhs
    end, desc)
  end
  either(keys.accept, function() M.accept('all') end, 'accept the suggestion')
  either(keys.accept_word, function() M.accept('word') end, 'accept a word')
  either(keys.accept_line, function() M.accept('line') end, 'accept a line')
  either(keys.dismiss, M.dismiss, 'dismiss the suggestion')
  local function later(fn, ...)
    local args = { ... }
    return function()
      vim.schedule(function() fn(unpack(args)) end)
      return ''
    end
  end
  imap(keys.next, later(M.next, 1), 'next suggestion')
  imap(keys.prev, later(M.next, -1), 'previous suggestion')
  imap(keys.trigger, later(M.ask), 'ask for a suggestion now')
end

--- Which ghost text this Neovim uses: 'builtin' or 'plugin'.
function M.path(options)
  local builtin = (options or M.options or config.defaults).builtin
  local has = vim.lsp.inline_completion ~= nil
  if builtin == nil then
    return has and 'builtin' or 'plugin'
  end
  return builtin and 'builtin' or 'plugin'
end

function M.setup(user)
  if vim.fn.has('nvim-0.10') == 0 then
    warn('needs Neovim 0.10 or newer', vim.log.levels.ERROR)
    return
  end
  local options, problems = config.resolve(user)
  for _, problem in ipairs(problems) do
    warn(problem)
  end
  if options.builtin and not vim.lsp.inline_completion then
    warn('builtin = true needs Neovim 0.12 (vim.lsp.inline_completion); using the plugin\'s own ghost text')
    options.builtin = false
  end
  M.options = options
  M.view = require(M.path() == 'builtin' and 'hindsight.builtin' or 'hindsight.ghost')
  api.nvim_set_hl(0, 'HindsightSuggestion', { link = 'Comment', default = true })

  local group = api.nvim_create_augroup('hindsight', { clear = true })
  api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = options.filetypes,
    callback = function(args)
      M.start(args.buf)
    end,
  })
  api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == 'hindsight' then
        on_attach(args.buf, client.id)
      end
    end,
  })
  map_keys()
  -- Buffers already open when setup runs (lazy loading).
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(options.filetypes, vim.bo[bufnr].filetype) then
      M.start(bufnr)
    end
  end
end

--- For your own mappings. Each returns false when there was no suggestion to act on (call them from
--- vim.schedule in an <expr> mapping: an <expr> mapping may not change the buffer).
function M.accept(part)
  return M.view ~= nil and M.view.accept(api.nvim_get_current_buf(), part or 'all')
end

function M.dismiss()
  return M.view ~= nil and M.view.dismiss(api.nvim_get_current_buf())
end

function M.next(count)
  return M.view ~= nil and M.view.cycle(api.nvim_get_current_buf(), count or 1)
end

function M.ask()
  return M.view ~= nil and M.view.request(api.nvim_get_current_buf(), 1)
end

--- The suggestion on screen in the current buffer (the part not yet accepted), or nil.
function M.suggestion(bufnr)
  return M.view and M.view.visible(bufnr or api.nvim_get_current_buf())
end

--- Turn suggestions off or on (the server keeps running); nil flips.
function M.toggle(on)
  if on == nil then
    on = not M.view.enabled
  end
  M.view.enable(on)
  vim.notify('hindsight: suggestions ' .. (on and 'on' or 'off'))
end

local function format_status(s)
  local stats = s.stats or {}
  local lines = {
    ('hindsight %s, %s model %s%s'):format(
      s.version or '?', s.backend or '?', s.model or '?',
      s.modelLoaded and '' or (s.modelError and (' (failed: ' .. s.modelError .. ')') or ' (not loaded yet)')
    ),
    ('suggestions %s (%s path)'):format(M.view.enabled and 'on' or 'off', M.path()),
    ('database: %s'):format(s.database or 'none (outcomes are not recorded)'),
  }
  if stats.requests then
    lines[#lines + 1] = ('requests %d, shown %d, accepted %d (%.0f%%), partial %d, rejected %d'):format(
      stats.requests, stats.shown, stats.accepted, 100 * (stats.acceptance_rate or 0), stats.partial, stats.rejected
    )
    if stats.latency_p50_ms then
      lines[#lines + 1] = ('latency p50 %.0f ms, p95 %.0f ms'):format(stats.latency_p50_ms, stats.latency_p95_ms)
    end
  end
  local run = s.lastLearning
  if type(run) == 'table' then
    local promoted = {}
    for _, p in ipairs(run.promoted or {}) do
      promoted[#promoted + 1] = p.step .. ' ' .. tostring(p.version)
    end
    lines[#lines + 1] = ('last learning run %s, %s: %s'):format(
      type(run.endedAt) == 'number' and os.date('%Y-%m-%d %H:%M', math.floor(run.endedAt)) or '?',
      tostring(run.status),
      run.summary or (#promoted > 0 and ('promoted ' .. table.concat(promoted, ', ')) or tostring(run.reason))
    )
  end
  if type(s.nextLearning) == 'table' then
    lines[#lines + 1] = 'next learning run: ' .. tostring(s.nextLearning.when)
  end
  return table.concat(lines, '\n')
end

--- The server's status ({version, model, stats, ...}), or nil and why not.
function M.status(timeout_ms)
  local client = lsp.client()
  if not client then
    return nil, 'the server is not running (open a file of a configured filetype)'
  end
  local response = lsp.request_sync(client, 'workspace/executeCommand', { command = 'hindsight.status', arguments = {} }, timeout_ms or 5000)
  if not response then
    return nil, 'the server did not answer'
  end
  if response.err then
    return nil, response.err.message
  end
  return response.result
end

--- Load the model again (and, where trained, the gate and the adapter); starts the server if it is not up.
function M.reload()
  local client = lsp.client()
  if not client then
    M.start(api.nvim_get_current_buf())
    return
  end
  lsp.exec(client, { command = 'hindsight.reload', arguments = {} }, nil, function(err, result)
    if err then
      warn('reload failed: ' .. err.message, vim.log.levels.ERROR)
    elseif result.reloadProblems and #result.reloadProblems > 0 then
      -- it kept the last good model, adapter or gate: say why
      vim.notify(table.concat(result.reloadProblems, '\n'), vim.log.levels.WARN)
    else
      vim.notify(format_status(result))
    end
  end)
end

local subcommands = {
  status = function()
    local status, why = M.status()
    if status then
      vim.notify(format_status(status))
    else
      warn(why)
    end
  end,
  toggle = function()
    M.toggle()
  end,
  reload = function()
    M.reload()
  end,
}

function M.command(args)
  if not M.options then
    warn('call require("hindsight").setup{} first')
    return
  end
  local run = subcommands[args ~= '' and args or 'status']
  if not run then
    warn(('unknown subcommand %q; use status, toggle or reload'):format(args))
    return
  end
  run()
end

M.subcommands = vim.tbl_keys(subcommands)
M.format_status = format_status

return M
