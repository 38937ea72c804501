-- :checkhealth hindsight
local M = {}

function M.check()
  local health = vim.health
  local hindsight = require('hindsight')
  health.start('hindsight')

  if vim.fn.has('nvim-0.10') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim 0.10 or newer is needed')
    return
  end
  if not hindsight.options then
    health.warn('setup() has not been called', { 'add require("hindsight").setup{} to your config' })
    return
  end
  local path = hindsight.path()
  health.ok(path == 'builtin' and 'ghost text: Neovim\'s built-in vim.lsp.inline_completion'
    or 'ghost text: the plugin\'s own (extmarks)')

  local cmd = hindsight.options.cmd
  local exe = vim.fn.exepath(cmd[1])
  if exe ~= '' then
    health.ok(('server command: %s (%s)'):format(table.concat(cmd, ' '), exe))
  else
    health.error(('server command %s is not executable'):format(cmd[1]), {
      'pip install hindsight into a virtual environment and put its bin/ on PATH',
      'or set cmd = { "/path/to/.venv/bin/hindsight", "serve" } in setup()',
    })
    return
  end

  local status, why = hindsight.status(10000)
  if not status then
    health.warn('server: ' .. why)
    return
  end
  health.ok(('server %s is running (%s backend)'):format(status.version, status.backend))
  if status.modelLoaded then
    health.ok('model: ' .. status.model)
  elseif status.modelError then
    health.error('model failed to load: ' .. status.modelError, { 'fix the model path, then :Hindsight reload' })
  else
    health.info('model: not loaded yet (it loads in the background after start)')
  end
  if status.database then
    health.ok('outcomes recorded in ' .. status.database)
  else
    health.warn('outcomes are not being recorded (see the server\'s message)')
  end
  local stats = status.stats or {}
  if stats.requests then
    health.info(('%d requests, %d shown, %d accepted (%.0f%%)'):format(
      stats.requests, stats.shown, stats.accepted, 100 * (stats.acceptance_rate or 0)))
  end
end

return M
