@echo off
rem Installs lorelayd as a Windows service from this unpacked zip.
rem   install.cmd                  relay the running WSL 2 VM (--vm-id wsl)
rem   install.cmd LORELAYD-ARGS    e.g. --vm-id 1234abcd-... or
rem                                --guest tcp:192.0.2.10:50505 --token-file C:\ProgramData\lorelay\token
rem Run from an elevated prompt. Copies the programs to %ProgramFiles%\lorelay,
rem the sample config to %ProgramData%\lorelay\lorelay.ini (kept if present),
rem registers the service (auto start, restart on failure) and starts it.
setlocal EnableExtensions
set "SRC=%~dp0"
set "DEST=%ProgramFiles%\lorelay"
set "DATA=%ProgramData%\lorelay"
set "SVC=lorelayd"
set "ARGS=%*"
if "%ARGS%"=="" set "ARGS=--vm-id wsl"

rem An earlier install: stop it so its exe can be replaced, then re-create.
sc.exe query %SVC% >nul 2>&1
if not errorlevel 1 (
  echo lorelay: stopping the installed service
  sc.exe stop %SVC% >nul 2>&1
  call :wait_stopped
  sc.exe delete %SVC% >nul
  if errorlevel 1 goto :fail_delete
)

if not exist "%DEST%" mkdir "%DEST%"
copy /y "%SRC%lorelayd.exe" "%DEST%\lorelayd.exe" >nul
if errorlevel 1 goto :fail_copy
if exist "%SRC%lorelayctl.exe" copy /y "%SRC%lorelayctl.exe" "%DEST%\lorelayctl.exe" >nul
if not exist "%DATA%" mkdir "%DATA%"
if not exist "%DATA%\lorelay.ini" copy "%SRC%lorelay.ini" "%DATA%\lorelay.ini" >nul

sc.exe create %SVC% binPath= "\"%DEST%\lorelayd.exe\" %ARGS%" start= auto DisplayName= "lorelay localhost relay"
if errorlevel 1 goto :fail_create
sc.exe description %SVC% "Forwards the localhost ports of a VM or WSL guest to this machine's loopback." >nul
sc.exe failure %SVC% reset= 86400 actions= restart/5000/restart/5000/restart/30000
if errorlevel 1 echo lorelay: warning: could not set the restart actions
rem Event Log source: lorelayd.exe carries its own message table.
reg add "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" /v EventMessageFile /t REG_EXPAND_SZ /d "%DEST%\lorelayd.exe" /f >nul
reg add "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" /v TypesSupported /t REG_DWORD /d 7 /f >nul

sc.exe start %SVC%
if errorlevel 1 goto :fail_start
echo lorelay: installed and started; log: %DATA%\lorelayd.log, status: "%DEST%\lorelayctl.exe" status
exit /b 0

:wait_stopped
for /l %%i in (1,1,15) do (
  sc.exe query %SVC% | find "STOPPED" >nul 2>&1 && exit /b 0
  ping -n 2 127.0.0.1 >nul 2>&1
)
exit /b 0

:fail_delete
echo lorelay: could not remove the previous service (run as administrator?) 1>&2
exit /b 1
:fail_copy
echo lorelay: could not copy lorelayd.exe to %DEST% (run as administrator? service still running?) 1>&2
exit /b 1
:fail_create
echo lorelay: sc.exe create failed (run as administrator?) 1>&2
exit /b 1
:fail_start
echo lorelay: the service did not start; see %DATA%\lorelayd.log and the Application event log 1>&2
exit /b 1
